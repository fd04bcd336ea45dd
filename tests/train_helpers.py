"""Training-test helpers: small MIMIC-shaped tables where each patient has a disease topic and a
few personal details repeated across their notes (so the next note is learnable), and a tiny
random Gemma3 sentence-transformers model."""
import csv
import random

import torch


def build_tiny_gemma(root, minilm_dir):
    """Gemma3 (bidirectional, sliding window of a few tokens) -> mean pooling -> Dense -> Dense
    -> Normalize, with MiniLM's tokenizer; saved with save_model."""
    from mimicsearch.train.modeling import save_model
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense, Transformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling
    from transformers import AutoTokenizer, Gemma3TextConfig, Gemma3TextModel

    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=8,
        use_bidirectional_attention=True, max_position_embeddings=512, pad_token_id=0,
        layer_types=["sliding_attention", "full_attention"])
    Gemma3TextModel(config).save_pretrained(root / "hf")
    AutoTokenizer.from_pretrained(minilm_dir).save_pretrained(root / "hf")
    backbone = Transformer(str(root / "hf"), max_seq_length=64)
    # from_pretrained already halved the window once; restore the configured one
    backbone.auto_model.config.sliding_window = config.sliding_window
    for layer in backbone.auto_model.layers:
        if layer.self_attn.sliding_window is not None:
            layer.self_attn.sliding_window = config.sliding_window
    model = SentenceTransformer(modules=[
        backbone, Pooling(32, "mean"), Dense(32, 64, activation_function=torch.nn.Identity()),
        Dense(64, 32, activation_function=torch.nn.Identity()), Normalize()])
    return save_model(model, root / "st")

TOPICS = {
    "4280": ("congestive heart failure", ["edema", "furosemide", "ejection fraction", "orthopnea"]),
    "486": ("pneumonia", ["cough", "infiltrate", "ceftriaxone", "sputum"]),
    "5849": ("acute kidney injury", ["creatinine", "oliguria", "dialysis", "nephrology"]),
    "43491": ("ischemic stroke", ["aphasia", "hemiparesis", "tpa", "neurology"]),
    "5789": ("gastrointestinal bleed", ["melena", "endoscopy", "transfusion", "pantoprazole"]),
    "0389": ("septicemia", ["lactate", "vasopressors", "blood cultures", "vancomycin"]),
}
DETAILS = ["left knee replacement", "gout", "hearing aids", "penicillin allergy", "glaucoma",
           "former smoker", "lives alone", "wheelchair", "pacemaker", "hypothyroidism",
           "daughter is nurse", "retired teacher", "vegan diet", "sleep apnea", "psoriasis",
           "migraines", "prior appendectomy", "hepatitis c", "kidney stones", "farmer"]
CATEGORIES = ["Nursing", "Physician ", "Radiology", "Nursing/other"]


def write_synthetic(root, patients=24, notes_per_patient=4, seed=0):
    """Write NOTEEVENTS.csv and DIAGNOSES_ICD.csv under `root`; return root."""
    rng = random.Random(seed)
    codes = list(TOPICS)
    notes, diagnoses = [], []
    row = 1
    for p in range(patients):
        subject, hadm = 1000 + p, 5000 + p
        code = codes[p % len(codes)]
        name, words = TOPICS[code]
        details = rng.sample(DETAILS, 3)
        extra = rng.choice([c for c in codes if c != code])
        diagnoses += [(subject, hadm, 1, code), (subject, hadm, 2, extra),
                      (subject, hadm, 3, "4019")]
        for n in range(notes_per_patient):
            text = (f"Day {n + 1}. Patient with {name}; {rng.choice(words)} and "
                    f"{rng.choice(words)} noted. History of {details[0]}, {details[1]} and "
                    f"{details[2]}. Plan: continue {rng.choice(words)}, reassess tomorrow.")
            notes.append([row, subject, hadm, f"2150-01-{n + 1:02d}",
                          f"2150-01-{n + 1:02d} 0{n % 10}:00:00", "", CATEGORIES[n % 4], "",
                          "", "", text])
            row += 1
    with open(root / "NOTEEVENTS.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ROW_ID", "SUBJECT_ID", "HADM_ID", "CHARTDATE", "CHARTTIME", "STORETIME",
                    "CATEGORY", "DESCRIPTION", "CGID", "ISERROR", "TEXT"])
        w.writerows(notes)
    with open(root / "DIAGNOSES_ICD.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"])
        w.writerows([i, *d] for i, d in enumerate(diagnoses))
    return root
