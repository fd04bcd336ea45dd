"""The same synthetic patients in the note tables users hold: MIMIC-IV-Note and OMOP NOTE.

`generate` (or `generate_transfer`) writes MIMIC-III; `convert` rewrites those files in
another layout, row for row, so the same notes indexed in two layouts must give the same
answers (the layout tests rely on it):

- **mimic-iv**: `discharge.csv.gz` (discharge summaries, note_type DS, and their addenda,
  AD) and `radiology.csv.gz` (RR), MIMIC-IV-Note v2.2's columns: note_id
  `SUBJECT-TYPE-SEQ` (SEQ counts each patient's notes of that type in time order),
  subject_id, hadm_id (empty for outpatient studies, as in the release), note_type,
  note_seq, charttime (CHARTTIME, else the day's midnight, as MIMIC-IV writes a discharge
  summary's), storetime, text. MIMIC-IV-Note holds no other categories and no rows in
  error, so neither is written. `diagnoses_icd.csv.gz`: subject_id, hadm_id, seq_num,
  icd_code, icd_version; admissions with an even hadm_id are coded in ICD-10 (MIMIC-IV
  mixes both): each ICD-9 code becomes a fixed stand-in code in the ICD-10-CM chapter of
  the same body system (`icd.ICD10_RANGES`), so chapters agree across layouts. Stand-ins,
  not a clinical crosswalk.
- **omop**: `NOTE.csv` with CDM v5.4's NOTE columns: note_id (ROW_ID), person_id,
  note_date, note_datetime (CHARTTIME, empty where MIMIC has none), note_type_concept_id
  32817 (EHR), note_class_concept_id 0, note_title (DESCRIPTION), note_text,
  encoding_concept_id 32678 (UTF-8), language_concept_id 4180186 (English), provider_id
  (CGID), visit_occurrence_id (HADM_ID), note_source_value (CATEGORY, as the OHDSI MIMIC
  conversion does). Rows in error are left out: OMOP has no flag for them.
"""
from __future__ import annotations

import csv
import gzip
import io
import tempfile
import zlib
from pathlib import Path

from ..fileio import atomic_path
from ..icd import ICD10_RANGES, chapter
from .generator import DIAGNOSES_FILE, DISCHARGE, NOTES_FILE, SynthSummary

LAYOUTS = ("mimic-iii", "mimic-iv", "omop")
STYLES = ("standard", "transfer")
MIMIC_IV_NOTES = ("note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime",
                  "storetime", "text")
MIMIC_IV_DIAGNOSES = ("subject_id", "hadm_id", "seq_num", "icd_code", "icd_version")
OMOP_NOTE = ("note_id", "person_id", "note_date", "note_datetime", "note_type_concept_id",
             "note_class_concept_id", "note_title", "note_text", "encoding_concept_id",
             "language_concept_id", "provider_id", "visit_occurrence_id", "visit_detail_id",
             "note_source_value", "note_event_id", "note_event_field_concept_id")
FILES = {"mimic-iii": (NOTES_FILE, DIAGNOSES_FILE),
         "mimic-iv": ("discharge.csv.gz", "radiology.csv.gz", "diagnoses_icd.csv.gz"),
         "omop": ("NOTE.csv",)}


def _rows(path: Path):
    with open(path, encoding="utf-8", newline="") as f:
        yield from csv.DictReader(f)


def _writer(path: Path, gz: bool = False):
    """A CSV writer into `path` (gzipped with `gz`), and the file to close."""
    raw = open(path, "wb")  # noqa: SIM115 (closed by the caller)
    stream = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if gz else raw
    text = io.TextIOWrapper(stream, encoding="utf-8", newline="")
    return csv.writer(text, lineterminator="\n"), (text, raw)


def _close(handles) -> None:
    text, raw = handles
    text.close()
    raw.close()


def write_layout(patients: int, out_dir: str | Path, layout: str = "mimic-iii", *,
                 seed: int = 0, style: str = "standard", progress: bool = False
                 ) -> tuple[SynthSummary, list[Path]]:
    """`synth`: `patients` synthetic patients (the `style` corpus) in `layout` under
    `out_dir`; the summary of the patients drawn and the files written."""
    from .generator import generate
    from .transfer import generate_transfer

    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}; valid: {list(LAYOUTS)}")
    if style not in STYLES:
        raise ValueError(f"style {style!r}; valid: {list(STYLES)}")
    write = generate_transfer if style == "transfer" else generate
    out = Path(out_dir)
    if layout == "mimic-iii":
        summary = write(patients, out, seed=seed, progress=progress)
        return summary, [Path(summary.notes_path), Path(summary.diagnoses_path)]
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".mimic-iii-") as tmp:
        summary = write(patients, tmp, seed=seed, progress=progress)
        return summary, convert(tmp, layout, out)


def convert(mimic3_dir: str | Path, layout: str, out_dir: str | Path) -> list[Path]:
    """Rewrite the MIMIC-III files of `mimic3_dir` in `layout` into `out_dir`; the files
    written. Each file appears complete or not at all."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}; valid: {list(LAYOUTS)}")
    src, out = Path(mimic3_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if layout == "mimic-iii":
        return [src / NOTES_FILE, src / DIAGNOSES_FILE]
    if layout == "omop":
        return [_omop(src / NOTES_FILE, out / "NOTE.csv")]
    return _mimic_iv(src, out)


def _omop(notes: Path, dest: Path) -> Path:
    with atomic_path(dest) as tmp:
        w, handles = _writer(tmp)
        w.writerow(OMOP_NOTE)
        for r in _rows(notes):
            if r["ISERROR"].strip() == "1":
                continue
            w.writerow([r["ROW_ID"], r["SUBJECT_ID"], r["CHARTDATE"], r["CHARTTIME"], 32817, 0,
                        r["DESCRIPTION"], r["TEXT"], 32678, 4180186, r["CGID"], r["HADM_ID"],
                        "", r["CATEGORY"], "", ""])
        _close(handles)
    return dest


def _mimic_iv(src: Path, out: Path) -> list[Path]:
    discharge, radiology = out / "discharge.csv.gz", out / "radiology.csv.gz"
    seq: dict[tuple[str, str], int] = {}
    with atomic_path(discharge) as tmp_ds, atomic_path(radiology) as tmp_rr:
        ds, ds_h = _writer(tmp_ds, gz=True)
        rr, rr_h = _writer(tmp_rr, gz=True)
        for w in (ds, rr):
            w.writerow(MIMIC_IV_NOTES)
        for r in _rows(src / NOTES_FILE):
            category = r["CATEGORY"].strip()
            if r["ISERROR"].strip() == "1" or category not in (DISCHARGE, "Radiology"):
                continue
            kind = ("RR" if category == "Radiology" else
                    "AD" if r["DESCRIPTION"].strip() == "Addendum" else "DS")
            n = seq[(r["SUBJECT_ID"], kind)] = seq.get((r["SUBJECT_ID"], kind), 0) + 1
            (rr if kind == "RR" else ds).writerow([
                f"{r['SUBJECT_ID']}-{kind}-{n}", r["SUBJECT_ID"], r["HADM_ID"], kind, n,
                r["CHARTTIME"] or f"{r['CHARTDATE']} 00:00:00", r["STORETIME"], r["TEXT"]])
        _close(ds_h)
        _close(rr_h)
    diagnoses = out / "diagnoses_icd.csv.gz"
    with atomic_path(diagnoses) as tmp:
        w, handles = _writer(tmp, gz=True)
        w.writerow(MIMIC_IV_DIAGNOSES)
        for r in _rows(src / DIAGNOSES_FILE):
            ten = int(r["HADM_ID"]) % 2 == 0
            code = icd10_stand_in(r["ICD9_CODE"]) if ten else r["ICD9_CODE"]
            w.writerow([r["SUBJECT_ID"], r["HADM_ID"], r["SEQ_NUM"], code, 10 if ten else 9])
        _close(handles)
    return [discharge, radiology, diagnoses]


def _categories(low: str, high: str) -> list[str]:
    return [c for letter in map(chr, range(ord(low[0]), ord(high[0]) + 1))
            for c in (f"{letter}{n:02d}" for n in range(100)) if low <= c <= high]


def icd10_stand_in(code: str) -> str:
    """A fixed ICD-10-CM-shaped code in the chapter of the same body system as the ICD-9
    `code` (the first of that chapter's ICD-10 ranges), its fourth character and on from
    the ICD-9 code's digits; an ICD-9 code without a chapter stays as it is."""
    ch = chapter(code)
    if ch is None:
        return code
    low, high = next((lo, hi) for lo, hi, name in ICD10_RANGES if name == ch)
    options = _categories(low, high)
    category = options[zlib.crc32(code.encode()) % len(options)]
    return category + "".join(c for c in code[3:] if c.isdigit())[:4]

