"""A notes file to an embeddings directory: streaming, accounted, resumable.

Memory is bounded by one block of records (`batch_size`): each block is encoded and
appended to the open Parquet shard as a row group. A shard is closed after the block that
brings it to `shard_size` rows; then its rejects and the manifest are written, each
atomically, so the manifest always describes complete shards only. A re-run with the same
arguments skips the records those shards consumed and continues, giving the same files an
uninterrupted run gives.
"""
from __future__ import annotations

import csv
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from .embeddings import (
    NPY,
    REJECTS,
    TEXT_HASH,
    EmbeddingsManifest,
    EmbeddingsShard,
    ShardWriter,
    claim_out,
    embedding_column,
    embedding_matrix,
    own_files,
    rejects_part,
    remove_run,
    shard_schema,
    text_hash_column,
)
from .encoder import Encoded, Encoder, LongMode
from .fileio import (
    MANIFEST,
    atomic_open,
    atomic_path,
    safe_child,
    sha256_file,
    sweep_new,
    writer,
)
from .idset import IdSet
from .options import EncodeOptions
from .readers import (
    IdType,
    InputFormat,
    RecordBatch,
    Reject,
    arrow_stream,
    as_inputs,
    is_table,
    open_notes,
    write_rejects,
)

SHARD_SIZE = 50_000  # rows per shard: the resume granularity
BATCH_SIZE = 1024  # records read, tokenized and encoded together


@dataclass(frozen=True)
class EncodeSummary:
    input: str
    out_dir: str
    read: int  # input records: encoded + rejected
    encoded: int  # notes encoded
    rejected: int
    truncated: int  # notes longer than max_seq_length (cut, or split into windows)
    rows_written: int  # embedding rows (== encoded unless long="windows")
    shards: int
    dimension: int
    resumed_at: int  # records already done by an earlier run (0 for a fresh run)
    seconds: float  # this run
    notes_per_s: float  # this run

    def to_dict(self) -> dict:
        return asdict(self)


def _read_rejects(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f))[1:]


def _settings(inputs: list, encoder: Encoder, reader, options: EncodeOptions,
              **kw) -> dict:
    if reader.format is InputFormat.TABLE:
        where = {"input": reader.path, "input_bytes": None, "input_mtime_ns": None}
    else:
        stats = [p.stat() for p in inputs]
        where = {"input": " + ".join(str(p.resolve()) for p in inputs),
                 "input_bytes": sum(st.st_size for st in stats),
                 "input_mtime_ns": max(st.st_mtime_ns for st in stats)}
        if len(inputs) > 1:
            where["inputs"] = [{"path": str(p.resolve()), "bytes": st.st_size,
                                "mtime_ns": st.st_mtime_ns} for p, st in zip(inputs, stats)]
    c = reader.columns
    return {
        "engine": "local", **where, "format": reader.format.value,
        "text_col": c.text, "id_col": c.id, "keep": list(c.keep), "id_type": c.id_type.value,
        "schema": c.schema.to_dict(),
        "model_fingerprint": encoder.fingerprint, "model_file_sha256": encoder.variant.sha256,
        "options": options.to_dict(), **kw,
    }


def _clean(out: Path, m: EmbeddingsManifest | None) -> None:
    """Remove what a killed run left: temp files, and the files it marked as new (shards,
    snippets, rejects parts, spilled id maps) that the manifest does not name."""
    sweep_new(out, own_files(m))


def _block_table(batch: RecordBatch, enc: Encoded, schema: pa.Schema,
                 texts: list[str]) -> pa.Table:
    """One encoded block in the shard schema; `texts` are its rows' note texts."""
    rows = enc.parents  # int64 [rows] index into the batch's accepted records
    cols = {"id": pa.array(batch.ids, schema.field("id").type).take(rows),
            "line": pa.array(batch.lines[rows], pa.int64())}
    if "window" in schema.names:
        cols["window"] = pa.array(enc.windows, pa.int32())
    for k, values in batch.metadata.items():
        cols[k] = pa.array(values, pa.string()).take(rows)
    cols[TEXT_HASH] = text_hash_column(texts)
    cols["embedding"] = embedding_column(enc.vectors)
    return pa.table(cols, schema=schema)


class _ShardWriter(ShardWriter):
    """A local shard with what its manifest entry counts: records consumed, truncated
    notes, rejects."""

    def __init__(self, out: Path, index: int, schema: pa.Schema, snippets: bool,
                 full_text: bool):
        super().__init__(out, index, schema, snippets, full_text)
        self.records = self.truncated = 0
        self.rejects: list[Reject] = []


@writer("out_dir")
def encode_corpus(input, *, model_dir: str | Path, out_dir: str | Path,
                  options: EncodeOptions | None = None, threads: int | None = None,
                  shard_size: int = SHARD_SIZE, batch_size: int = BATCH_SIZE,
                  show_text: bool = False,
                  npy: bool = False, overwrite: bool = False, progress: bool = True,
                  encoder: Encoder | None = None) -> EncodeSummary:
    """Encode every note of `input` into `out_dir` (see mimicsearch/embeddings.py).

    `input`: a notes file (CSV, TSV, JSONL, optionally .gz, Parquet), a list of them read
    as one (ids unique across them), or an in-memory table (pyarrow, pandas, polars:
    anything with `__arrow_c_stream__`). Its columns' roles: `schema.py` (`options.columns`).
    Rejected rows go to `out_dir/rejects.csv` (note text only with `show_text`). Re-running
    the same call on a file resumes an interrupted run; different arguments, or a table,
    need `overwrite`. `encoder` reuses a loaded model (it must be `model_dir`'s, loaded with
    the options' precision and max_length).
    Returns an `EncodeSummary` (read = encoded + rejected). Raises ValueError (bad input,
    naming file and line), FileNotFoundError, DirectoryBusy (another writer holds out_dir).
    """
    t0 = time.perf_counter()
    table = is_table(input)
    inputs = [arrow_stream(input)] if table else [Path(p) for p in as_inputs(input)]
    input, out = inputs if len(inputs) > 1 else inputs[0], Path(out_dir)
    if shard_size < 1:
        raise ValueError(f"shard_size={shard_size}: must be >= 1")
    o = options or EncodeOptions()
    long, prompt = LongMode(o.long), o.prompt
    encoder = encoder or Encoder(model_dir, threads=threads, precision=o.precision,
                                 runtime=o.runtime, max_length=o.max_length)
    dim = encoder.check_dim(o.dim)
    encoder.prompt_text(prompt)
    keep = None if o.keep is None else list(o.keep)
    text_col, id_col, id_type, input_format = o.text_col, o.id_col, o.id_type, o.input_format
    probe = open_notes(input, text_col, id_col, keep, id_type, input_format, batch_size,
                       columns=o.columns)
    probe.close()
    settings = _settings(inputs, encoder, probe, o, prompt=prompt, dim=dim, long=long.value,
                         shard_size=shard_size, batch_size=batch_size, show_text=show_text,
                         max_length=encoder.max_length)
    columns = probe.columns
    id_type_v = "int64" if columns.id_type is IdType.INT else "string"
    schema = shard_schema(dim, id_type_v, list(columns.keep), long is LongMode.WINDOWS)

    claim_out(out, "encode")
    out.mkdir(parents=True, exist_ok=True)
    m = _resume_point(out, settings, overwrite, resumable=not table)
    _clean(out, m)
    if m is None:
        m = EmbeddingsManifest(encoder.fingerprint, dim, 0, (), tuple(
            n for n in schema.names if n != "embedding"), id_type_v, long.value,
            settings=settings)
    skip = m.shards[-1].records_through if m.shards else 0
    seen = IdSet(spill_dir=out) if m.complete else _seen_ids(out, m)
    shards = list(m.shards)

    reader = open_notes(input, text_col, id_col, keep, id_type, input_format, batch_size,
                        skip=skip, seen=seen, show_text=show_text, columns=o.columns,
                        **({"checked": True} if len(inputs) > 1 else {}))
    bar = tqdm(total=reader.total_rows, initial=skip, unit="note", file=sys.stderr,
               disable=not progress or m.complete, dynamic_ncols=True, smoothing=0.1)
    encoded = 0
    shard: _ShardWriter | None = None
    records = skip
    stream = (x for x in ()) if m.complete else encoder.encode_stream(
        reader, lambda b: b.texts, prompt=prompt, dim=dim, long=long)
    try:
        for batch, enc in stream:
            if shard is None:
                shard = _ShardWriter(out, len(shards), schema, o.snippets, o.full_text)
            texts = [batch.texts[p] for p in enc.parents]
            shard.write(_block_table(batch, enc, schema, texts), texts)
            shard.records += batch.records
            shard.truncated += int(enc.truncated.sum())
            shard.rejects.extend(batch.rejects)
            records += batch.records
            encoded += len(batch.texts)
            bar.update(batch.records)
            if reader.total_rows is None and reader.progress() > 0:
                bar.total = max(records, int(records / reader.progress()))
                bar.refresh()
            if shard.rows >= shard_size:
                m = _close_shard(out, shard, m, shards, records, show_text)
                shard = None
        if shard is not None:
            m = _close_shard(out, shard, m, shards, records, show_text)
            shard = None
    except BaseException as e:
        if shard is not None:
            shard.abort(e)
        raise
    finally:
        stream.close()  # stops the tokenizer thread before the file closes
        bar.close()
        reader.close()
        seen.close()
    if not m.complete:
        m = _finish(out, m, show_text, npy)
    elif npy and not (out / NPY).is_file():
        _write_npy(out, m)
    seconds = time.perf_counter() - t0
    return EncodeSummary(
        input=probe.path if table else " + ".join(map(str, inputs)), out_dir=str(out),
        read=records,
        encoded=records - m.rejected, rejected=m.rejected, truncated=m.truncated,
        rows_written=m.rows, shards=len(m.shards), dimension=m.dim, resumed_at=skip,
        seconds=round(seconds, 3), notes_per_s=round(encoded / seconds, 1) if seconds else 0.0)


def _resume_point(out: Path, settings: dict, overwrite: bool,
                  resumable: bool = True) -> EmbeddingsManifest | None:
    """The manifest of an earlier run with the same settings, or None to start fresh.
    A table is never resumed: nothing tells whether it still holds the same rows."""
    if not (out / MANIFEST).is_file():
        if any(out.glob("shard-*.parquet")):
            remove_run(out)  # killed before its first manifest: nothing to keep
        return None
    m = EmbeddingsManifest.load(out)
    if not resumable and not overwrite:
        raise ValueError(f"{out} holds an earlier encode run and an in-memory table cannot "
                         "resume one; pass overwrite=True or another out_dir")
    if resumable and m.settings == settings:
        return m
    if not overwrite:
        diff = _differences(m.settings, settings)
        raise ValueError(
            f"{out} holds a run with other arguments (differs in {diff}); re-run with the "
            "same arguments to resume it, or pass --overwrite / another --out")
    remove_run(out)
    return None


def _differences(old: dict, new: dict) -> list[str]:
    """Settings that differ; an option also recorded at the top level is named once."""
    top = sorted(k for k in set(old) | set(new) if k != "options" and old.get(k) != new.get(k))
    a, b = old.get("options") or {}, new.get("options") or {}
    return top + sorted(f"options.{k}" for k in set(a) | set(b)
                        if a.get(k) != b.get(k) and k not in top)


def _seen_ids(out: Path, m: EmbeddingsManifest) -> IdSet:
    """Ids (to their line) of the complete shards, checking each shard's hash."""
    seen = IdSet(spill_dir=out)
    for s in m.shards:
        path = safe_child(out, s.file)
        if not path.is_file() or sha256_file(path) != s.sha256:
            raise ValueError(f"{path} is missing or differs from {out}/{MANIFEST}; "
                             "cannot resume: re-run with --overwrite")
        t = pq.read_table(path, columns=["id", "line"])
        seen.update(t.column("id").to_pylist(), t.column("line").to_pylist())
    return seen


def _close_shard(out: Path, shard: _ShardWriter, m: EmbeddingsManifest, shards: list,
                 records: int, show_text: bool) -> EmbeddingsManifest:
    sha256, snippets_sha256 = shard.close()
    write_rejects(out / rejects_part(len(shards)), shard.rejects, show_text, new=True)
    shards.append(EmbeddingsShard(
        shard.name, shard.rows, sha256, records, len(shard.rejects), shard.truncated,
        shard.snippets, snippets_sha256))
    m = m.replace(rows=m.rows + shard.rows, shards=tuple(shards), complete=False,
                  rejected=m.rejected + len(shard.rejects),
                  truncated=m.truncated + shard.truncated)
    m.save(out)
    return m


def _finish(out: Path, m: EmbeddingsManifest, show_text: bool, npy: bool) -> EmbeddingsManifest:
    """Merge the per-shard rejects into rejects.csv, write the .npy, mark the run complete."""
    with atomic_open(out / REJECTS, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["line", "id", "reason"] + (["text"] if show_text else []))
        for i in range(len(m.shards)):
            w.writerows(_read_rejects(out / rejects_part(i)))
    if npy:
        _write_npy(out, m)
    done = m.replace(complete=True)
    done.save(out)
    for i in range(len(m.shards)):
        (out / rejects_part(i)).unlink(missing_ok=True)
    sweep_new(out, own_files(done))  # drops the new-file marks
    return done


def _write_npy(out: Path, m: EmbeddingsManifest) -> None:
    with atomic_path(out / NPY) as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                        shape=(m.rows, m.dim))
        row = 0
        for s in m.shards:
            mat = embedding_matrix(pq.read_table(out / s.file, columns=["embedding"]))
            arr[row:row + len(mat)] = mat
            row += len(mat)
        arr.flush()
        del arr
