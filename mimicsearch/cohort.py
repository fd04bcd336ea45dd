"""A cohort: the patients one patient search returned, or a chosen few of them, as one Arrow
table for the next analysis, written as CSV or Parquet.

Why each row repeats the request (query, mode, fusion, filters, k, the index's fingerprint,
when): a cohort is only useful while it can be re-derived, and a CSV has nowhere else to
keep that. The columns are the same in both formats (lists joined by ";" in CSV); Parquet
also keeps the request as JSON in its schema metadata under `mimicsearch.cohort`.
"""
from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from . import __version__

FORMATS = ("csv", "parquet")
METADATA_KEY = b"mimicsearch.cohort"
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}


def provenance(*, name: str | None, query: dict, mode: str, fusion, filters, k: int,
               index: str, selected: Sequence | None = None) -> dict:
    """What re-derives a cohort: the search request, the selection, the index state, when."""
    when = dt.datetime.now(dt.UTC)
    return {"cohort": name or "cohort", "query": {k_: v for k_, v in query.items()
                                                  if v is not None},
            "mode": mode, "fusion": None if fusion is None else fusion.to_dict(),
            "filters": filters.to_dict(), "k": k,
            "selected": None if selected is None else list(selected), "index": index,
            "exported_at": when.isoformat(timespec="seconds"),
            "mimicsearch": __version__}


def selection(patients: list, subjects: Sequence | None) -> list:
    """The patients (the subject role) in `subjects` (all where None), in rank order; a
    subject the search did not return is an error, not a silent gap in the cohort."""
    if subjects is None:
        return patients
    wanted = {str(s) for s in subjects}
    missing = wanted - {str(p.subject) for p in patients}
    if missing:
        raise ValueError(f"selected patient(s) {sorted(missing)} are not among the "
                         f"{len(patients)} patients this search returns; raise k or leave "
                         "them out")
    return [p for p in patients if str(p.subject) in wanted]


def table(patients: list, request: dict) -> pa.Table:
    """A row per patient: rank, subject, score, notes judged, admissions, first/last date,
    categories, its best notes' ids, then the request."""
    rows = [{"rank": p.rank, "subject": p.subject, "score": p.score, "notes": p.notes,
             "admissions": p.admissions, "first_date": p.first_date,
             "last_date": p.last_date, "categories": p.categories,
             "matching_note_ids": [m.id for m in p.matches]} for p in patients]
    body = pa.Table.from_pylist(rows) if rows else pa.table(
        {"rank": pa.array([], pa.int64()), "subject": pa.array([], pa.string()),
         "score": pa.array([], pa.float64()), "notes": pa.array([], pa.int64()),
         "admissions": pa.array([], pa.list_(pa.string())),
         "first_date": pa.array([], pa.date32()), "last_date": pa.array([], pa.date32()),
         "categories": pa.array([], pa.list_(pa.string())),
         "matching_note_ids": pa.array([], pa.list_(pa.string()))})
    n = body.num_rows
    for key in ("cohort", "query", "mode", "fusion", "filters", "k", "index", "exported_at"):
        value = request[key]
        if isinstance(value, (dict, list)) or value is None:
            value = json.dumps(value, sort_keys=True, default=str)
        body = body.append_column(key, pa.array([value] * n,
                                                pa.int64() if key == "k" else pa.string()))
    return body.replace_schema_metadata({METADATA_KEY: json.dumps(request, default=str)})


def to_bytes(cohort: pa.Table, fmt: str) -> bytes:
    """The cohort as a CSV or Parquet file's bytes."""
    if fmt not in FORMATS:
        raise ValueError(f"cohort format {fmt!r}; valid: {list(FORMATS)}")
    sink = io.BytesIO()
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(cohort, sink)
    else:
        import pyarrow.csv as pacsv

        flat = cohort
        for i, f in enumerate(cohort.schema):
            if pa.types.is_list(f.type):
                joined = pc.binary_join(pc.cast(cohort.column(i), pa.list_(pa.string())), ";")
                flat = flat.set_column(i, f.name, joined)
        pacsv.write_csv(flat, sink)
    return sink.getvalue()


def build(patients: list, *, query: dict, mode: str, fusion, filters, k: int, index: str,
          select: Sequence | None = None, name: str | None = None) -> pa.Table:
    """The cohort of a patient search's `patients` (those in `select`, where given) with
    its request: what `Searcher.cohort`, the CLI and the server all write."""
    from .fusion import Fusion

    request = provenance(name=name, query=query, mode=mode,
                         fusion=(fusion or Fusion()) if mode == "hybrid" else None,
                         filters=filters, k=k, index=index, selected=select)
    return table(selection(patients, select), request)


def format_of(path: str | Path) -> str:
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise ValueError(f"{Path(path).name}: a cohort file ends in .csv or .parquet")
    return suffix


def read_request(path: str | Path) -> dict:
    """The request a Parquet cohort file was made by (its schema metadata)."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    if METADATA_KEY not in meta:
        raise ValueError(f"{Path(path).name} is not a cohort file written by mimicsearch")
    return json.loads(meta[METADATA_KEY])


def write(cohort: pa.Table, path: str | Path, fmt: str | None = None) -> Path:
    """Write `cohort` to `path` whole or not at all (format from the suffix by default)."""
    from .fileio import atomic_open

    data = to_bytes(cohort, fmt or format_of(path))
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)
