"""Small MIMIC-shaped tables for training tests: each patient has a disease topic and a few
personal details repeated across their notes, so the next note is learnable in a few steps
(tests/fixtures' synth_dir is richer but too large for CPU training tests)."""
import csv
import random

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
