"""The parity gate: a variant ships only if its embeddings match the PyTorch model's.

Two measures on held-out texts: per-text cosine between the variant's and PyTorch's vector
(min and mean over documents and queries), and top-10 retrieval overlap, where short queries
(each note's opening words, with the query prompt) search the notes (document prompt) in both
spaces and the neighbour sets are compared. Overlap tolerates ties: a variant neighbour counts
if PyTorch scores it at least as high as its own 10th neighbour, less `tie_tol`.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mimicsearch.model_manifest import Parity, Precision

TOP_K = 10

_OPENINGS = ["Patient is a {age} year old {sex} with {pmh} who presents with {cc}.",
             "{age}yo {sex} admitted for {cc}; history of {pmh}.",
             "Chief complaint: {cc}. PMH: {pmh}.",
             "Brief hospital course: {age} y/o {sex} with {pmh}, here with {cc}."]
_FINDINGS = ["CXR shows {cxr}.", "ECG: {ecg}.", "Labs notable for {lab}.",
             "Started on {med} {dose} mg {freq}.", "Exam: {exam}.", "CT head: {ct}.",
             "Plan: continue {med}, follow up {lab} in {days} days.",
             "Discharged home in stable condition on {med}."]
_FILL = {
    "sex": ["male", "female", "M", "F"],
    "pmh": ["hypertension", "type 2 diabetes mellitus", "CHF with EF 35%", "COPD on home O2",
            "ESRD on hemodialysis", "atrial fibrillation on warfarin", "cirrhosis", "CAD s/p CABG"],
    "cc": ["chest pain radiating to the left arm", "shortness of breath", "fever and cough",
           "altered mental status", "abdominal pain with nausea and vomiting", "syncope",
           "GI bleed with melena", "right-sided weakness"],
    "cxr": ["bilateral infiltrates", "no acute cardiopulmonary process", "small left effusion",
            "pulmonary edema", "right lower lobe consolidation"],
    "ecg": ["sinus rhythm at 72 bpm", "atrial fibrillation with RVR", "ST elevations in II/III/aVF",
            "left bundle branch block", "sinus tachycardia, no ischemic changes"],
    "lab": ["troponin 0.45", "lactate 4.1", "creatinine 2.3 (baseline 1.1)", "WBC 18.2",
            "INR 3.4", "hemoglobin 6.9", "potassium 5.8", "BNP 1200"],
    "med": ["aspirin", "heparin drip", "metoprolol", "furosemide", "vancomycin", "insulin",
            "ceftriaxone", "lisinopril"],
    "exam": ["crackles at bases", "JVD to the jaw", "no focal deficits", "RUQ tenderness",
             "irregularly irregular rhythm", "2+ pitting edema bilaterally"],
    "ct": ["no acute intracranial hemorrhage", "left MCA territory hypodensity",
           "chronic small vessel disease"],
    "freq": ["daily", "BID", "TID", "q6h"],
}


def sample_texts(n: int = 160, seed: int = 0) -> list[str]:
    """Synthetic clinical notes of mixed lengths (a line to past 256 tokens), deterministic."""
    rng = np.random.default_rng(seed)

    def fill(template: str) -> str:
        return template.format(age=int(rng.integers(18, 95)), dose=int(rng.integers(1, 100)) * 5,
                               days=int(rng.integers(1, 30)),
                               **{k: v[rng.integers(len(v))] for k, v in _FILL.items()})

    texts = []
    for i in range(n):
        sentences = int(rng.choice([1, 2, 4, 8, 16, 30]))
        texts.append(" ".join([fill(_OPENINGS[rng.integers(len(_OPENINGS))])]
                              + [fill(_FINDINGS[rng.integers(len(_FINDINGS))])
                                 for _ in range(sentences - 1)]))
    return texts


def read_texts(path: str | os.PathLike) -> list[str]:
    """Calibration texts from a UTF-8 file, one text per line (blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"calibration file {path} not found")
    try:
        texts = [t.strip() for t in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}); give one text per line") \
            from None
    texts = [t for t in texts if t]
    if len(texts) < 2 * TOP_K:
        raise ValueError(f"{path}: {len(texts)} texts; the parity gate needs at least "
                         f"{2 * TOP_K} (one per line) for a top-{TOP_K} retrieval check")
    return texts


@dataclass(frozen=True)
class Thresholds:
    """Floors a variant must reach; the manifest records the measures, not just pass/fail."""

    fp32_cosine: float = 0.9999
    int8_cosine: float = 0.99
    int4_cosine: float = 0.98
    top10_overlap: float = 0.9

    def cosine(self, precision: Precision) -> float:
        return {Precision.FP32: self.fp32_cosine, Precision.INT8: self.int8_cosine,
                Precision.INT4: self.int4_cosine}[precision]


@dataclass(frozen=True)
class ParitySet:
    """Reference vectors from PyTorch, computed once and compared with every variant."""

    documents: list[str]
    queries: list[str]
    doc_ref: np.ndarray    # (n_docs, dim) float32, unit rows
    query_ref: np.ndarray  # (n_queries, dim) float32, unit rows


# (texts, prompt name: "document" or "query") -> (n, dim) unit vectors; each embedder maps
# the name to the model's prompt string itself, as the runtime Encoder does.
Embed = Callable[[Sequence[str], str], np.ndarray]


def build_parity_set(embed_torch: Embed, texts: Sequence[str], query_words: int = 8,
                     max_queries: int = 32) -> ParitySet:
    if len(texts) < 2 * TOP_K:
        raise ValueError(f"{len(texts)} parity texts; need at least {2 * TOP_K}")
    documents = list(texts)
    step = max(1, len(documents) // max_queries)
    queries = [" ".join(t.split()[:query_words]) for t in documents[::step][:max_queries]]
    return ParitySet(documents, queries, embed_torch(documents, "document"),
                     embed_torch(queries, "query"))


def measure_parity(ps: ParitySet, embed: Embed, tie_tol: float = 1e-4) -> Parity:
    docs = embed(ps.documents, "document")
    queries = embed(ps.queries, "query")
    cos = np.concatenate([_row_cosine(docs, ps.doc_ref), _row_cosine(queries, ps.query_ref)])
    return Parity(cosine_min=float(cos.min()), cosine_mean=float(cos.mean()),
                  top10_overlap=topk_overlap(ps.query_ref @ ps.doc_ref.T, queries @ docs.T,
                                             TOP_K, tie_tol),
                  texts=len(cos))


def topk_overlap(ref_scores: np.ndarray, scores: np.ndarray, k: int = TOP_K,
                 tie_tol: float = 1e-4) -> float:
    """Mean fraction of each row's top-k under `scores` that is also top-k under `ref_scores`,
    where a neighbour scoring within `tie_tol` of the reference k-th score counts as top-k."""
    k = min(k, ref_scores.shape[1])
    kth = -np.sort(-ref_scores, axis=1)[:, k - 1:k]                 # (q, 1)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]         # (q, k)
    hits = np.take_along_axis(ref_scores, top, axis=1) >= kth - tie_tol
    return float(hits.mean())


def gate(precision: Precision, parity: Parity, thresholds: Thresholds) -> str:
    """Why the variant fails the gate, or "" if it passes."""
    floor = thresholds.cosine(precision)
    reasons = []
    if parity.cosine_min < floor:
        reasons.append(f"cosine min {parity.cosine_min:.5f} < {floor}")
    if parity.top10_overlap < thresholds.top10_overlap:
        reasons.append(f"top-{TOP_K} overlap {parity.top10_overlap:.3f} < "
                       f"{thresholds.top10_overlap}")
    return "; ".join(reasons)


def _row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    num = (a * b).sum(axis=1)
    return num / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
