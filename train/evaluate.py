"""Held-out evaluation of an embedding model on a pairs directory.

Metrics, all on patients the model never trained on:
- next-note recall@k: query = anchor, corpus = every positive of the evaluated pairs, hit = the
  exact next note; "excluded" removes the anchor itself (and copies of its text) from the
  candidates, "seed" is the seed's protocol (no exclusion), kept for comparison with its card;
- diagnosis macro-AUROC: one-vs-rest logistic regression on note embeddings for the most frequent
  ICD-9 codes of the notes' admissions, trained and scored on disjoint patients;
- silhouette (cosine) of sampled notes by ICD-9 chapter of the admission's primary diagnosis and
  by note category; their difference says whether the space is organised by disease more than by
  note type.

The model is only an `Embedder` (texts -> L2-normalised rows), so a sentence-transformers
directory and an exported ONNX directory are evaluated by the same code.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mimicsearch.fileio import write_json

from mimicsearch.icd import chapter
from .modeling import load_model, prompt_text
from .pairs import PairsManifest, Split, codes, load_table
from .protocol import KS, pair_targets, ranks, recall

Embedder = Callable[[Sequence[str]], np.ndarray]


def st_embedder(model, batch_size: int = 32, show_progress: bool = False,
                prompt: str | None = None) -> Embedder:
    """Embed with a loaded SentenceTransformer, with the named prompt (None: no prompt, as in
    training without --prompt)."""
    text = prompt_text(model, prompt)

    def embed(texts: Sequence[str]) -> np.ndarray:
        model.eval()
        return model.encode(list(texts), prompt=text, batch_size=batch_size,
                            convert_to_numpy=True,
                            normalize_embeddings=True, show_progress_bar=show_progress
                            ).astype(np.float32)
    return embed


def load_embedder(model: str | os.PathLike, device: str | None = None, batch_size: int = 32,
                  max_seq_length: int | None = None, show_progress: bool = False,
                  prompt: str | None = None, precision: str | None = None,
                  runtime: str | None = None) -> Embedder:
    """An Embedder for a sentence-transformers model (dir or hub id) or an exported ONNX dir
    (manifest.json without modules.json; `precision` / `runtime` pick its variant, so the
    shipped int8 is measured beside fp32)."""
    path = Path(model)
    exported = (path / "manifest.json").is_file() and not (path / "modules.json").is_file()
    if path.is_dir() and exported:
        from mimicsearch.encoder import Encoder

        encoder = Encoder(path, precision=precision, runtime=runtime)
        if max_seq_length is not None and max_seq_length != encoder.manifest.max_seq_length:
            raise ValueError(f"{path} is an exported model with max_seq_length "
                             f"{encoder.manifest.max_seq_length}; got --max-seq-length "
                             f"{max_seq_length} (the export fixes it)")
        encoder.prompt_text(prompt)  # unknown names fail now, not after loading the data
        return lambda texts: encoder.encode(list(texts), prompt=prompt)

    if precision is not None or runtime is not None:
        raise ValueError(f"{model} is a sentence-transformers model: --precision and --runtime "
                         "choose among an exported model's variants")
    st = load_model(model, device=device)
    if max_seq_length is not None:
        st.max_seq_length = max_seq_length
    return st_embedder(st, batch_size, show_progress, prompt)


def recall_at_k(queries: np.ndarray, corpus: np.ndarray, targets: np.ndarray,
                excluded: Sequence[Sequence[int]] | None = None,
                ks: Sequence[int] = KS, chunk: int = 1024) -> dict[str, float]:
    """Fraction of queries whose target corpus row ranks within the top k by dot product.

    Ranks as `protocol.ranks` counts them; `excluded[i]` lists corpus rows removed from
    query i's candidates.
    """
    ranked = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        scores = queries[start:start + chunk] @ corpus.T  # (q, n_corpus)
        rows = np.arange(len(scores))
        if excluded is not None:
            for r in rows:
                drop = [j for j in excluded[start + r] if j != targets[start + r]]
                scores[r, drop] = -np.inf
        ranked[start:start + chunk] = ranks(scores, targets[start:start + chunk])
    return recall(ranked, ks)


def next_note_recall(embed: Embedder, pairs: pd.DataFrame,
                     ks: Sequence[int] = KS) -> dict[str, float]:
    """Next-note recall@k with the anchor's own text excluded, and under the seed's protocol."""
    if pairs.empty:
        raise ValueError("no pairs to evaluate")
    corpus, targets, excluded = pair_targets(pairs)
    corpus_emb = embed(corpus["positive_text"].tolist())
    query_emb = embed(pairs["anchor_text"].tolist())
    out = {f"{k}_excluded": v
           for k, v in recall_at_k(query_emb, corpus_emb, targets, excluded, ks).items()}
    seed = recall_at_k(query_emb, corpus_emb, targets, None, ks)
    out |= {f"{k}_seed": v for k, v in seed.items()}
    out["pairs"] = len(pairs)
    out["corpus"] = len(corpus)
    return out


def diagnosis_auroc(embeddings: np.ndarray, notes: pd.DataFrame, diagnoses: pd.DataFrame,
                    top: int = 25, test_size: float = 0.5, seed: int = 0) -> dict[str, float]:
    """Macro-AUROC of one-vs-rest logistic regressions predicting each of the `top` most frequent
    codes (by admissions) of a note's admission, fit on some patients, scored on the others."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    has_adm = notes["hadm_id"].notna().to_numpy()
    X, notes = embeddings[has_adm], notes[has_adm].reset_index(drop=True)
    adm = labelled(diagnoses)
    adm = adm[adm["hadm_id"].isin(set(notes["hadm_id"]))]
    codes = adm.drop_duplicates(["hadm_id", "code"])["code"].value_counts()
    codes = codes.sort_index().sort_values(ascending=False, kind="stable").index[:top].tolist()
    patients = np.array(sorted(set(notes["subject_id"])))
    rng = np.random.default_rng(seed)
    test_patients = set(rng.choice(patients, size=round(len(patients) * test_size),
                                   replace=False).tolist())
    is_test = notes["subject_id"].isin(test_patients).to_numpy()
    codes_of = adm.groupby("hadm_id")["code"].agg(set)
    note_codes = notes["hadm_id"].map(codes_of)
    aucs, scored = {}, {}
    for code in codes:
        y = np.array([isinstance(s, set) and code in s for s in note_codes])
        if len(set(y[~is_test])) < 2 or len(set(y[is_test])) < 2:
            continue  # a code absent (or universal) on one side cannot be fit or scored
        clf = LogisticRegression(max_iter=1000).fit(X[~is_test], y[~is_test])
        p = clf.predict_proba(X[is_test])[:, 1]
        aucs[code] = float(roc_auc_score(y[is_test], p))
        scored[code] = (y[is_test], p)
    out = {"auroc_macro": float(np.mean(list(aucs.values()))) if aucs else float("nan"),
           "auroc_codes": len(aucs)}
    lo, hi = _auroc_interval(scored, notes["subject_id"].to_numpy()[is_test], rng)
    return out | {"auroc_ci95_low": lo, "auroc_ci95_high": hi}


def _auroc_interval(scored: dict, patients: np.ndarray, rng, draws: int = 200) -> list:
    """A 95% bootstrap interval of the macro-AUROC, resampling the scored patients (their
    notes together): how far the number moves with which patients happen to be held out."""
    from sklearn.metrics import roc_auc_score

    ids = np.unique(patients)
    if not scored or len(ids) < 2:
        return [float("nan"), float("nan")]
    rows_of = {p: np.flatnonzero(patients == p) for p in ids}
    macro = []
    for _ in range(draws):
        rows = np.concatenate([rows_of[p] for p in rng.choice(ids, len(ids), replace=True)])
        per_code = [roc_auc_score(y[rows], p[rows]) for y, p in scored.values()
                    if len(set(y[rows])) == 2]
        if per_code:
            macro.append(np.mean(per_code))
    lo, hi = np.percentile(macro, [2.5, 97.5]) if macro else (float("nan"),) * 2
    return [float(lo), float(hi)]


def silhouettes(embeddings: np.ndarray, notes: pd.DataFrame, diagnoses: pd.DataFrame,
                sample: int = 5000, seed: int = 0) -> dict[str, float]:
    """Cosine silhouette by diagnosis chapter (primary diagnosis; ICD-9 and ICD-10 in one
    scheme) and by note category."""
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(notes), size=min(sample, len(notes)), replace=False))
    X, notes = embeddings[idx], notes.iloc[idx].reset_index(drop=True)
    primary = _primary_codes(diagnoses)
    by_chapter = notes["hadm_id"].map(primary).map(
        lambda c: chapter(*c) if isinstance(c, tuple) else None)
    out = {"silhouette_chapter": _silhouette(silhouette_score, X, by_chapter),
           "silhouette_category": _silhouette(silhouette_score, X, notes["category"])}
    out["silhouette_difference"] = out["silhouette_chapter"] - out["silhouette_category"]
    out["silhouette_notes"] = len(notes)
    return out


def evaluate_embedder(embed: Embedder, data_dir: str | os.PathLike,
                      split: Split | str = Split.TEST, sample: int = 5000,
                      seed: int = 0) -> dict[str, float]:
    """All metrics of one model on one split of a pairs directory."""
    split = Split(split)
    embed = embed if getattr(embed, "cached", False) else _deduplicated(embed)
    pairs = load_table(data_dir, "pairs", split)
    notes = load_table(data_dir, "notes", split)
    diagnoses = load_table(data_dir, "diagnoses")
    metrics = next_note_recall(embed, pairs)
    note_emb = embed(notes["text"].tolist())
    metrics |= diagnosis_auroc(note_emb, notes, diagnoses, seed=seed)
    metrics |= silhouettes(note_emb, notes, diagnoses, sample=sample, seed=seed)
    metrics["patients"] = int(notes["subject_id"].nunique())
    return metrics


def evaluate(model: str | os.PathLike, data_dir: str | os.PathLike,
             base: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
             split: Split | str = Split.TEST, device: str | None = None,
             max_seq_length: int | None = None, batch_size: int = 32,
             show_progress: bool = False, prompt: str | None = None,
             retrievers: bool = True, patients: bool = True,
             fusion_data: str | os.PathLike | None = None, precision: str | None = None,
             runtime: str | None = None) -> dict:
    """Evaluate `model` (and `base`, for comparison) on held-out patients; write metrics.json
    (default: inside the model directory, else ./metrics.json) and return its content.

    `retrievers`: also BM25 and each model's hybrid with BM25 on the same pairs (fusion
    chosen on the validation split of `fusion_data`, default `data_dir`: give the training
    corpus's pairs when evaluating on a transfer corpus, which must not tune anything), and,
    with `patients`, patient search (`compare`)."""
    manifest = PairsManifest.load(data_dir)
    result = {"data": str(data_dir), "split": Split(split).value, "prompt": prompt,
              "data_files": manifest.files, "models": {}}
    embeds = {}
    for role, name in (("base", base), ("model", model)):
        if name is None:
            continue
        exported = role == "model" or (Path(name) / "manifest.json").is_file()
        variant = {"precision": precision, "runtime": runtime} if exported else {}
        embed = _deduplicated(load_embedder(name, device, batch_size, max_seq_length,
                                            show_progress, prompt, **variant))
        embeds[role] = embed
        result["models"][role] = {"path": str(name),
                                  "metrics": evaluate_embedder(embed, data_dir, split)}
    if retrievers:
        from .compare import compare_retrievers

        split = Split(split)
        val = None
        if split != Split.VAL or fusion_data is not None:
            val = load_table(fusion_data or data_dir, "pairs", Split.VAL)
        result["fusion_data"] = str(fusion_data or data_dir)
        result["retrieval"] = compare_retrievers(
            embeds, load_table(data_dir, "pairs", split), val,
            load_table(data_dir, "notes", split), load_table(data_dir, "diagnoses"),
            patients=patients)
    if out is None:
        out = Path(model) / "metrics.json" if Path(model).is_dir() else Path("metrics.json")
    write_json(out, result)
    result["out"] = str(out)
    return result


def comparison_rows(result: dict) -> list[tuple[str, float | None, float | None]]:
    """(metric, base, model) rows for the side-by-side table."""
    models = result["models"]
    names = list(models.get("model", models.get("base"))["metrics"])
    get = lambda role, k: models[role]["metrics"].get(k) if role in models else None
    return [(k, get("base", k), get("model", k)) for k in names]


def _deduplicated(embed: Embedder) -> Embedder:
    """Embed each distinct text once per evaluation (anchors, positives and notes overlap)."""
    cache: dict[str, np.ndarray] = {}

    def embed_once(texts: Sequence[str]) -> np.ndarray:
        new = list(dict.fromkeys(t for t in texts if t not in cache))
        if new:
            cache.update(zip(new, embed(new)))
        return np.stack([cache[t] for t in texts]) if texts else np.zeros((0, 0), np.float32)
    embed_once.cached = True
    return embed_once


def labelled(diagnoses: pd.DataFrame) -> pd.DataFrame:
    """Diagnoses with `code`, a label that keeps ICD-9 and ICD-10 codes apart."""
    d = codes(diagnoses)
    return d.assign(code=[c if v == 9 else f"{c} (ICD-10)"
                          for c, v in zip(d["icd_code"], d["icd_version"])])


def _primary_codes(diagnoses: pd.DataFrame) -> pd.Series:
    """hadm_id -> (code, version) of its primary diagnosis."""
    d = codes(diagnoses)
    d = d.sort_values("seq_num", kind="stable") if "seq_num" in d else d
    d = d.drop_duplicates("hadm_id").set_index("hadm_id")
    return pd.Series(list(zip(d["icd_code"], d["icd_version"])), index=d.index, dtype=object)


def _silhouette(score, X: np.ndarray, labels: pd.Series) -> float:
    keep = labels.notna().to_numpy()
    if len(set(labels[keep])) < 2 or keep.sum() <= len(set(labels[keep])):
        return float("nan")
    return float(score(X[keep], labels[keep].to_numpy(), metric="cosine"))
