"""Synthetic MIMIC-III-shaped note tables: the corpus every test, demo and benchmark uses.

`generator` writes NOTEEVENTS.csv and DIAGNOSES_ICD.csv; `vocab` holds the clinical
vocabulary (ICD-9 codes, drugs, labs, note styles) the generator draws on.
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

__all__ = [
    "CATEGORY_COUNTS",
    "DIAGNOSES_FILE",
    "DIAGNOSIS_COLUMNS",
    "METAVISION",
    "NOTES_FILE",
    "NOTE_COLUMNS",
    "SynthSummary",
    "generate",
]
