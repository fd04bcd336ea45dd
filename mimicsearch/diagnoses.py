"""Diagnoses kept with an index (`build-index --diagnoses FILE`): the chapters of each
admission, which patient-search calibration scores "patients like this one" by. Chapters,
not codes: two patients with heart failure coded 428.0 and 428.22 (or I50.9) are alike;
the model card and `evaluate` measure patient search the same way.

Two layouts, columns matched case-insensitively: MIMIC-III DIAGNOSES_ICD (SUBJECT_ID,
HADM_ID, ICD9_CODE, SEQ_NUM) and MIMIC-IV diagnoses_icd (subject_id, hadm_id, icd_code,
icd_version 9 or 10, seq_num), gzipped or not; chapters of both revisions in one scheme
(`mimicsearch.icd`).
"""
from __future__ import annotations

import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pyarrow.parquet as pq

from .fileio import atomic_path, writer
from .icd import chapter, parse_version
from .index.commit import commit
from .index.manifest import FileRef, IndexManifest

LAYOUTS = {  # name -> (subject, admission, code, version or None: all ICD-9)
    "mimic-iii": ("SUBJECT_ID", "HADM_ID", "ICD9_CODE", None),
    "mimic-iv": ("subject_id", "hadm_id", "icd_code", "icd_version"),
}


def read_codes(path: str | Path) -> pa.Table:
    """A diagnoses file as (subject, admission, seq_num, icd_code, icd_version), every
    value text but the version; a row without patient or admission, or with a version
    other than 9 or 10, is an error naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"diagnoses file not found: {path}")
    try:
        t = pv.read_csv(path, convert_options=pv.ConvertOptions(column_types={
            c: pa.string() for cols in LAYOUTS.values() for c in
            (*(x for x in cols if x), "SEQ_NUM", "seq_num")}))
    except (pa.ArrowInvalid, OSError) as e:
        raise ValueError(f"{path}: not a readable CSV file ({e})") from None
    lower = {c.lower(): c for c in t.column_names}
    for name, cols in LAYOUTS.items():
        if all(c.lower() in lower for c in cols if c):
            break
    else:
        raise ValueError(f"{path}: not a diagnoses file (MIMIC-III DIAGNOSES_ICD has "
                         f"{', '.join(LAYOUTS['mimic-iii'][:3])}; MIMIC-IV diagnoses_icd has "
                         f"{', '.join(LAYOUTS['mimic-iv'])}); columns here: {t.column_names}")
    subject_col, hadm_col, code_col, version_col = (lower[c.lower()] if c else None
                                                    for c in cols)
    subject, hadm = t.column(subject_col).to_pylist(), t.column(hadm_col).to_pylist()
    for line, (s, h) in enumerate(zip(subject, hadm), 2):
        if not s or not h:
            raise ValueError(f"{path}, line {line}: empty {subject_col} or {hadm_col} (every "
                             "diagnosis row names its patient and admission)")
    if version_col is None:
        versions = [9] * t.num_rows
    else:
        versions = [parse_version(v, f"{path}, line {line}") for line, v in
                    enumerate(t.column(version_col).to_pylist(), 2)]
    seq = lower.get("seq_num")
    return pa.table({
        "subject": pa.array([s.strip() for s in subject]),
        "admission": pa.array([h.strip() for h in hadm]),
        "seq_num": t.column(seq).cast(pa.string()) if seq else pa.nulls(t.num_rows, pa.string()),
        "icd_code": pc.utf8_trim_whitespace(t.column(code_col).fill_null("")),
        "icd_version": pa.array(versions, pa.int8())})


def read_chapters(path: str | Path) -> tuple[pa.Table, int]:
    """(SUBJECT_ID, HADM_ID, CHAPTERS) per admission of a diagnoses file (the index keeps
    these names whatever the notes' layout), and how many code rows had no chapter (blank
    or malformed codes, left out)."""
    t = read_codes(path)
    chapters: dict = {}
    unknown = 0
    for s, h, c, v in zip(*(t.column(n).to_pylist() for n in
                            ("subject", "admission", "icd_code", "icd_version"))):
        ch = chapter(c, v) if c else None
        if ch is None:
            unknown += 1
            continue
        chapters.setdefault((s, h), set()).add(ch)
    keys = sorted(chapters)
    return pa.table({"SUBJECT_ID": [k[0] for k in keys], "HADM_ID": [k[1] for k in keys],
                     "CHAPTERS": [sorted(chapters[k]) for k in keys]}), unknown


@writer("index_dir")
def attach(index_dir: str | Path, path: str | Path) -> dict:
    """Keep `path`'s chapters with the index (replacing any kept before), in one commit;
    what was kept: admissions, patients, codes without a chapter."""
    index_dir = Path(index_dir)
    table, unknown = read_chapters(path)
    m = IndexManifest.load(index_dir)
    name = f"diagnoses-{uuid.uuid4().hex[:12]}.parquet"
    with atomic_path(index_dir / name, new=True) as tmp:
        pq.write_table(table, tmp)
    commit(index_dir, m, m.with_(diagnoses=FileRef.of(index_dir, name)))
    return {"admissions": table.num_rows,
            "patients": len(pc.unique(table.column("SUBJECT_ID"))),
            "codes_without_chapter": unknown}
