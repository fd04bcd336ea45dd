"""Synthetic MIMIC-III generator: schema, determinism, realism and MIMIC's quirks."""
import csv

from mimicsearch.synth import DIAGNOSIS_COLUMNS, NOTE_COLUMNS


def _header(path):
    with open(path, newline="", encoding="utf-8") as f:
        return tuple(next(csv.reader(f)))


def test_columns_are_mimic_v14(synth_dir):
    assert _header(synth_dir / "NOTEEVENTS.csv") == NOTE_COLUMNS == (
        "ROW_ID", "SUBJECT_ID", "HADM_ID", "CHARTDATE", "CHARTTIME", "STORETIME", "CATEGORY",
        "DESCRIPTION", "CGID", "ISERROR", "TEXT")
    assert _header(synth_dir / "DIAGNOSES_ICD.csv") == DIAGNOSIS_COLUMNS == (
        "ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE")
