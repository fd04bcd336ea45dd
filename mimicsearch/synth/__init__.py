"""Synthetic MIMIC-III-shaped note tables: the corpus every test, demo and benchmark uses.

`generator` writes NOTEEVENTS.csv and DIAGNOSES_ICD.csv; `vocab` holds the clinical
vocabulary (ICD-9 codes, drugs, labs, note styles) the generator draws on; `transfer` writes
a corpus of the same shape independently of both, to measure whether a fine-tune transfers.
"""
from .generator import (
    CATEGORY_COUNTS,
    DIAGNOSES_FILE,
    DIAGNOSIS_COLUMNS,
    METAVISION,
    NOTE_COLUMNS,
    NOTES_FILE,
    SynthSummary,
    generate,
)
from .transfer import generate_transfer

__all__ = [
    "CATEGORY_COUNTS",
    "DIAGNOSES_FILE",
    "DIAGNOSIS_COLUMNS",
    "METAVISION",
    "NOTES_FILE",
    "NOTE_COLUMNS",
    "SynthSummary",
    "generate",
    "generate_transfer",
]
