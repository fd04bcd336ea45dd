"""Diagnoses kept with an index (`build-index --diagnoses DIAGNOSES_ICD.csv`): the ICD-9
chapters of each admission, which patient-search calibration scores "patients like this
one" by. Chapters, not codes: two patients with heart failure coded 428.0 and 428.22 are
alike; the model card and `evaluate` measure patient search the same way.
"""
from __future__ import annotations

import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pyarrow.parquet as pq

from .fileio import atomic_path, writer
from .icd9 import chapter
from .index.commit import commit
from .index.manifest import FileRef, IndexManifest

COLUMNS = ("SUBJECT_ID", "HADM_ID", "ICD9_CODE")


def read_chapters(path: str | Path) -> tuple[pa.Table, int]:
    """(SUBJECT_ID, HADM_ID, CHAPTERS) per admission of a MIMIC DIAGNOSES_ICD file, and how
    many code rows had no ICD-9 chapter (blank or malformed codes, left out)."""
    path = Path(path)
    try:
        t = pv.read_csv(path, convert_options=pv.ConvertOptions(
            column_types={c: pa.string() for c in (*COLUMNS, *(c.lower() for c in COLUMNS))}))
    except (pa.ArrowInvalid, OSError) as e:
        raise ValueError(f"{path}: not a readable CSV file ({e})") from None
    by_upper = {c.upper(): c for c in t.column_names}
    missing = [c for c in COLUMNS if c not in by_upper]
    if missing:
        raise ValueError(f"{path}: no {', '.join(missing)} column (a MIMIC DIAGNOSES_ICD file "
                         f"has {', '.join(COLUMNS)}; columns here: {t.column_names})")
    subject, hadm, code = (t.column(by_upper[c]).to_pylist() for c in COLUMNS)
    chapters: dict = {}
    unknown = 0
    for line, (s, h, c) in enumerate(zip(subject, hadm, code), 2):
        if not s or not h:
            raise ValueError(f"{path}, line {line}: empty SUBJECT_ID or HADM_ID (every "
                             "diagnosis row names its patient and admission)")
        ch = chapter(c) if c else None
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
