"""The Spark engine: encode note tables and build index directories on a cluster.

Spark only decides where the work runs. Executors use the same `Encoder` (same sorting and
token-budget batching) and the same index functions as the local engine, and the result is
the same embeddings directory (embeddings.py) and the same index directory
(index_manifest.py): `mimicsearch query` and `info` cannot tell which engine built it.

Each Python worker loads the ONNX model once (a module-level cache) and keeps it for every
task it runs, so memory is one model copy per concurrently running task. ORT runs
`spark.task.cpus` intra-op threads by default so tasks do not oversubscribe executor cores.

Paths are plain filesystem paths that the driver and every executor can read (and, for the
outputs, write): a local disk in `local[N]` mode, a shared filesystem (NFS, a FUSE-mounted
object store such as /dbfs) on a cluster. The model directory can instead be shipped to the
executors with `SparkContext.addFile` (`ship_model=True`). hdfs:// or s3:// URLs are not
supported: faiss and the atomic writes need POSIX files.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark import SparkFiles, TaskContext
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from . import embeddings as emb
from . import index as ix
from .embeddings import EmbeddingsManifest, embedding_column, embedding_matrix, shard_schema
from .encode import EncodeSummary
from .encoder import Encoder, LongMode
from .fileio import atomic_open, atomic_path, safe_child, sha256_file
from .index_manifest import MANIFEST, BuildParams, IndexManifest, Shard, StorePart
from .manifest import ModelManifest
from .store import SNIPPET_CHARS, store_table, write_part

EMBEDDING = "embedding"
REJECTS = "rejects.csv"


# ---------------------------------------------------------------------------------------
# Session


def spark_session(master: str | None = None, app_name: str = "mimicsearch",
                  conf: dict[str, str] | None = None,
                  progress: bool = True) -> SparkSession:
    """The active session, or a new one on `master` (None: spark-submit's or local[*]).

    PYSPARK_PYTHON defaults to this interpreter so that local workers see the same packages.
    `progress` is Spark's console progress bar (stderr).
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName(app_name).config(
        "spark.ui.showConsoleProgress", str(progress).lower())
    if master:
        builder = builder.master(master)
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def _task_cpus() -> int:
    ctx = TaskContext.get()
    return max(1, int(ctx.cpus())) if ctx is not None else 1


# ---------------------------------------------------------------------------------------
# Encoding on executors


@dataclass(frozen=True)
class EncodeSpec:
    """Everything an executor needs to encode like the driver asked (pickled into tasks)."""

    model_dir: str
    shipped: bool = False  # model_dir is the name of a directory added with addFile
    threads: int | None = None  # None: spark.task.cpus
    precision: str | None = None
    prompt: str | None = "document"
    dim: int | None = None
    long: str = LongMode.TRUNCATE.value

    def check(self) -> ModelManifest:
        """Refuse a bad dim/prompt/long on the driver, before any task starts."""
        if self.shipped:
            raise ValueError("check() runs on the driver, before the model is shipped")
        m = ModelManifest.load(self.model_dir)
        m.variant(self.precision)
        dims = sorted({m.dimension, *m.matryoshka_dims}, reverse=True)
        if self.dim is not None and self.dim not in dims:
            raise ValueError(f"dim={self.dim} is not a Matryoshka dimension of "
                             f"{m.source_model}; valid: {dims}")
        valid = sorted({"query", "document", *m.prompts})
        if self.prompt is not None and self.prompt not in valid:
            raise ValueError(f"unknown prompt {self.prompt!r}; valid: {valid} or None")
        long = LongMode(self.long)
        if long is LongMode.WINDOWS:
            raise ValueError("long='windows' gives several rows per note; the Spark engine "
                             "keeps one row per note: use 'truncate' or 'chunk'")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads={self.threads}: must be >= 1 (or None for "
                             "spark.task.cpus)")
        return m

    def encoder(self) -> Encoder:
        """This worker's Encoder, loaded on first use and kept for later tasks."""
        threads = self.threads or _task_cpus()
        path = SparkFiles.get(self.model_dir) if self.shipped else self.model_dir
        key = (path, threads, self.precision)
        enc = _ENCODERS.get(key)
        if enc is None:
            enc = _ENCODERS[key] = Encoder(path, threads=threads, precision=self.precision)
        return enc

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(float32 [n, dim] vectors, bool [n] truncated) for texts, in order."""
        enc = self.encoder().encode_detailed(texts, self.prompt, self.dim, self.long)
        return enc.vectors, enc.truncated


_ENCODERS: dict[tuple, Encoder] = {}


def model_spec(spark: SparkSession, model_dir: str | Path, *, ship_model: bool = False,
               **options) -> EncodeSpec:
    """An EncodeSpec for `model_dir`, checked on the driver; with ship_model the directory
    is copied to every executor by SparkContext.addFile (no shared filesystem needed)."""
    model_dir = Path(model_dir).resolve()
    spec = EncodeSpec(str(model_dir), **options)
    spec.check()
    if ship_model:
        spark.sparkContext.addFile(str(model_dir), recursive=True)
        spec = replace(spec, model_dir=model_dir.name, shipped=True)
    return spec


def _list_column(vectors: np.ndarray) -> pa.ListArray:
    """float32 [n, dim] as Spark's array<float> (an Arrow list), without per-row Python."""
    n, dim = vectors.shape
    offsets = pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(vectors.reshape(-1)))


def embed_dataframe(df: DataFrame, model_dir: str | Path, *, text_col: str = "TEXT",
                    out_col: str = EMBEDDING, prompt: str | None = "document",
                    dim: int | None = None, threads: int | None = None,
                    precision: str | None = None, long: str = "truncate",
                    truncated_col: str | None = None, ship_model: bool = False) -> DataFrame:
    """`df` plus an `out_col` array<float> column of L2-normalised embeddings of `text_col`.

    Lazy, like any DataFrame transformation; rows keep their partitions and order. Null
    texts get a null embedding. `truncated_col` names an optional boolean column saying
    which texts were longer than the model's max_seq_length.
    """
    if text_col not in df.columns:
        raise ValueError(f"no text column {text_col!r}; columns: {df.columns}")
    clash = [c for c in (out_col, truncated_col) if c and c in df.columns]
    if clash:
        raise ValueError(f"column(s) {clash} already exist; pick another out_col/truncated_col")
    spec = model_spec(df.sparkSession, model_dir, ship_model=ship_model, threads=threads,
                      precision=precision, prompt=prompt, dim=dim, long=long)
    fields = [*df.schema.fields, T.StructField(out_col, T.ArrayType(T.FloatType(), False))]
    if truncated_col:
        fields.append(T.StructField(truncated_col, T.BooleanType()))
    schema = T.StructType(fields)

    def encode_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            texts = batch.column(text_col)
            present = np.flatnonzero(~np.asarray(texts.is_null().to_numpy(zero_copy_only=False)))
            vectors, truncated = spec.encode(texts.take(present).to_pylist())
            mask = np.ones(batch.num_rows, dtype=bool)
            mask[present] = False
            full = np.zeros((batch.num_rows, vectors.shape[1]), np.float32)
            full[present] = vectors
            col = _list_column(full)
            if len(present) < batch.num_rows:
                col = pa.ListArray.from_arrays(col.offsets, col.values, mask=pa.array(mask))
            arrays = [*batch.columns, col]
            names = [*batch.schema.names, out_col]
            if truncated_col:
                flags = np.zeros(batch.num_rows, dtype=bool)
                flags[present] = truncated
                arrays.append(pa.array(flags, mask=mask))
                names.append(truncated_col)
            yield pa.RecordBatch.from_arrays(arrays, names=names)

    return df.mapInArrow(encode_batches, schema)


# ---------------------------------------------------------------------------------------
# A corpus file to an embeddings directory


def read_notes(spark: SparkSession, path: str | Path, input_format: str | None = None,
               delimiter: str | None = None) -> DataFrame:
    """A notes file as a DataFrame: CSV/TSV (RFC 4180 quoting, multi-line notes), Parquet or
    JSONL. CSV columns stay strings; malformed CSV fails the job instead of dropping rows."""
    from .readers import InputFormat, detect_format

    path = Path(path).resolve()
    if not path.exists():
        raise FileNotFoundError(f"input file not found: {path}")
    fmt = InputFormat(input_format) if input_format else detect_format(path)
    if fmt is InputFormat.PARQUET:
        return spark.read.parquet(str(path))
    if fmt is InputFormat.JSONL:
        return spark.read.option("mode", "FAILFAST").json(str(path))
    sep = delimiter or ("\t" if fmt is InputFormat.TSV else ",")
    df = (spark.read.option("header", True).option("multiLine", True).option("escape", '"')
          .option("sep", sep).option("mode", "FAILFAST").option("encoding", "UTF-8")
          .csv(str(path)))
    return df.toDF(*[c.lstrip("\ufeff") for c in df.columns])  # a UTF-8 BOM stays in


@contextlib.contextmanager
def _malformed_input(path: str | Path) -> Iterator[None]:
    """Spark's parse errors as one line naming the file; Spark's own message quotes the
    record, and note text must not reach error messages."""
    from .readers import MalformedInputError

    try:
        yield
    except Exception as e:
        if "MALFORMED_" not in str(e):
            raise
        raise MalformedInputError(
            f"{path}: Spark found a malformed record (an unbalanced quote or a wrong column "
            "count?); `mimicsearch encode --engine local` names its line") from None


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def number_records(df: DataFrame) -> tuple[DataFrame, int]:
    """(`df` plus `_rec`, each row's 1-based position in the input; the row count), computed
    in the JVM: rows per input partition are counted once, then offset (no Python, no
    single-partition window)."""
    df = (df.withColumn("_pid", F.spark_partition_id())
          .withColumn("_mid", F.monotonically_increasing_id()))
    counts = dict(df.groupBy("_pid").count().collect())
    offsets, total = [], 0
    for pid in range(max(counts, default=-1) + 1):
        offsets.append(total)
        total += counts.get(pid, 0)
    if not offsets:
        return df.withColumn("_rec", F.lit(0).cast("long")).drop("_pid", "_mid"), 0
    start = F.element_at(F.array(*[F.lit(o).cast("long") for o in offsets]), F.col("_pid") + 1)
    within = F.col("_mid") - F.shiftleft(F.col("_pid").cast("long"), 33)
    return df.withColumn("_rec", start + within + 1).drop("_pid", "_mid"), total


def _validated(df: DataFrame, text: str, id_col: str | None, int_ids: bool) -> DataFrame:
    """Add `_id` (the note id) and `_reason` (null for good rows, else why it is rejected),
    with the local reader's rules: ids present and integer (or non-blank strings), text
    present and not blank, first occurrence of an id wins."""
    if id_col is None:
        df = df.withColumn("_raw_id", F.col("_rec").cast("string")).withColumn(
            "_id", F.col("_rec"))
        bad_id = F.lit(None)
    else:
        raw = F.col(id_col).cast("string")
        df = df.withColumn("_raw_id", raw)
        if int_ids:
            df = df.withColumn("_id", F.expr(f"try_cast(trim({_quoted(id_col)}) as bigint)"))
        else:
            df = df.withColumn("_id", F.trim(raw))
        bad_id = (F.when(raw.isNull() | (F.trim(raw) == ""), "missing id")
                  .when(F.col("_id").isNull(), "bad id: not an integer"))
    t = F.col(text).cast("string")
    reason = F.coalesce(bad_id, F.when(t.isNull(), "missing text").when(
        F.trim(t) == "", "empty text"))
    df = df.withColumn("_reason", reason)
    first = F.min(F.when(F.col("_reason").isNull(), F.col("_rec"))).over(
        Window.partitionBy("_id"))
    dup = F.when(F.col("_reason").isNull() & (F.col("_rec") != first),
                 F.concat(F.lit("duplicate id (first at record "), first.cast("string"),
                          F.lit(")")))
    return df.withColumn("_reason", F.coalesce(F.col("_reason"), dup))


def encode_corpus_spark(input_path: str | Path, model_dir: str | Path, out_dir: str | Path, *,
                        text_col: str | None = None, id_col: str | None = None,
                        keep: list[str] | None = None, id_type: str = "auto",
                        prompt: str | None = "document", dim: int | None = None,
                        threads: int | None = None, precision: str | None = None,
                        long: str = "truncate", partitions: int | None = None,
                        keep_text_chars: int = 0, ship_model: bool = False,
                        input_format: str | None = None, overwrite: bool = False,
                        progress: bool = True, master: str | None = None,
                        spark: SparkSession | None = None) -> EncodeSummary:
    """`encode --engine spark`: read a notes file with Spark, encode it on the executors and
    write the embeddings directory `mimicsearch encode` writes (one shard per partition,
    rows in input order, rejects.csv).

    `line` is the record's 1-based position in the input (Spark's CSV reader does not report
    source lines). keep_text_chars > 0 keeps the start of each text in a TEXT column, which
    becomes the snippet when the directory is indexed.
    """
    from .readers import Columns

    t0 = time.perf_counter()
    out = Path(out_dir).resolve()
    if (out / emb.MANIFEST).exists():
        if not overwrite:
            raise FileExistsError(f"{out} already holds an embeddings directory; choose "
                                  "another --out or pass overwrite (the Spark engine does "
                                  "not resume)")
        for old in [out / emb.MANIFEST, out / REJECTS, *out.glob("shard-*.parquet")]:
            old.unlink(missing_ok=True)
    spark = spark or spark_session(master, progress=progress)
    spec = model_spec(spark, model_dir, ship_model=ship_model, threads=threads,
                      precision=precision, prompt=prompt, dim=dim, long=long)
    manifest = ModelManifest.load(model_dir)
    out_dim = dim or manifest.dimension
    with _malformed_input(input_path):
        raw = read_notes(spark, input_path, input_format)
        cols = Columns.resolve(raw.columns, input_path, text_col, id_col, keep, id_type)
        numbered, read = number_records(raw)
    int_ids = cols.id_type.value == "int64"
    df = _validated(numbered, cols.text, cols.id, int_ids).cache()
    try:
        rejects = (df.filter(F.col("_reason").isNotNull())
                   .select("_rec", "_raw_id", "_reason").orderBy("_rec").collect())
        good = df.filter(F.col("_reason").isNull()).select(
            F.col("_rec").alias("line"), F.col("_id").alias("id"),
            *[F.col(k).cast("string").alias(k) for k in cols.keep],
            F.col(cols.text).cast("string").alias("_text"))
        n_parts = partitions or spark.sparkContext.defaultParallelism
        good = good.repartitionByRange(n_parts, "line").sortWithinPartitions("line")
        metadata = list(cols.keep) + (["TEXT"] if keep_text_chars > 0 else [])
        schema = shard_schema(out_dim, "int64" if int_ids else "string", metadata, False)
        out.mkdir(parents=True, exist_ok=True)
        written = good.mapInArrow(
            _shard_writer(spec, str(out), schema, list(cols.keep), keep_text_chars),
            "pid int, file string, rows long, sha256 string, truncated long, last_line long",
        ).collect()
    finally:
        df.unpersist()

    written = sorted(written, key=lambda r: r["pid"])
    reject_lines = np.array([r["_rec"] for r in rejects], dtype=np.int64)
    shards, before = [], 0
    for r in written:
        upto = int(np.searchsorted(reject_lines, r["last_line"], side="right"))
        shards.append(emb.Shard(r["file"], r["rows"], r["sha256"], r["last_line"],
                                      upto - before, r["truncated"]))
        before = upto
    _write_rejects(out / REJECTS, rejects)
    rows = sum(s.rows for s in shards)
    truncated = sum(s.truncated for s in shards)
    settings = {"engine": "spark", "input": str(Path(input_path).resolve()),
                "text_col": cols.text, "id_col": cols.id, "keep": list(cols.keep),
                "id_type": cols.id_type.value, "model_fingerprint": manifest.fingerprint,
                "model_file_sha256": manifest.variant(precision).sha256, "prompt": prompt,
                "dim": out_dim, "long": spec.long, "keep_text_chars": keep_text_chars}
    EmbeddingsManifest(
        model_fingerprint=manifest.fingerprint, dim=out_dim, rows=rows, shards=tuple(shards),
        columns=("id", "line", *metadata), id_type="int64" if int_ids else "string",
        long=spec.long, complete=True, settings=settings, rejected=len(rejects),
        truncated=truncated).save(out)
    seconds = time.perf_counter() - t0
    return EncodeSummary(
        input=str(input_path), out=str(out), rows_read=read, encoded=rows,
        rejected=len(rejects), truncated=truncated, rows_written=rows, shards=len(shards),
        dim=out_dim, resumed_at=0, seconds=round(seconds, 3),
        notes_per_s=round(rows / seconds, 1) if seconds else 0.0)


def _write_rejects(path: Path, rejects: list) -> None:
    import csv

    with atomic_open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["line", "id", "reason"])
        for r in rejects:
            w.writerow([r["_rec"], "" if r["_raw_id"] is None else r["_raw_id"], r["_reason"]])


def _shard_writer(spec: EncodeSpec, out_dir: str, schema: pa.Schema, keep: list[str],
                  keep_text_chars: int):
    """The mapInArrow function: encode one partition and write it as one shard file."""

    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        pid = TaskContext.get().partitionId()
        name = f"shard-{pid:05d}.parquet"
        path = Path(out_dir) / name
        rows = truncated = last = 0
        with contextlib.ExitStack() as stack:
            writer = None
            for batch in batches:
                if batch.num_rows == 0:
                    continue
                texts = batch.column("_text").to_pylist()
                vectors, trunc = spec.encode(texts)
                arrays = [batch.column("id").cast(schema.field("id").type),
                          batch.column("line")]
                arrays += [batch.column(k) for k in keep]
                if keep_text_chars > 0:
                    arrays.append(pa.array([t[:keep_text_chars] for t in texts], pa.string()))
                arrays.append(embedding_column(vectors))
                table = pa.Table.from_arrays(arrays, schema=schema)
                if writer is None:
                    tmp = stack.enter_context(atomic_path(path))
                    writer = stack.enter_context(pq.ParquetWriter(tmp, schema))
                writer.write_table(table)
                rows += batch.num_rows
                truncated += int(trunc.sum())
                last = int(batch.column("line")[-1].as_py())
        if rows:
            yield pa.RecordBatch.from_pydict(
                {"pid": [pid], "file": [name], "rows": [rows], "sha256": [sha256_file(path)],
                 "truncated": [truncated], "last_line": [last]},
                schema=pa.schema([("pid", pa.int32()), ("file", pa.string()),
                                  ("rows", pa.int64()), ("sha256", pa.string()),
                                  ("truncated", pa.int64()), ("last_line", pa.int64())]))

    return write


# ---------------------------------------------------------------------------------------
# An embeddings directory to an index directory


@dataclass(frozen=True)
class Piece:
    """The corpus rows [first_row, end_row), built into one shard by one task; `segments`
    says where they are: (shard file, first and end row within it, sha256)."""

    first_row: int
    end_row: int
    segments: tuple[tuple[str, int, int, str], ...]


def plan_pieces(manifest: EmbeddingsManifest, rows_per_piece: int) -> list[Piece]:
    """Cut the corpus into consecutive pieces of `rows_per_piece` rows (the last shorter)."""
    starts = np.cumsum([0] + [s.rows for s in manifest.shards])
    pieces = []
    for first in range(0, manifest.rows, rows_per_piece):
        end = min(first + rows_per_piece, manifest.rows)
        segments = []
        for s, lo, hi in zip(manifest.shards, starts[:-1], starts[1:]):
            a, b = max(first, lo), min(end, hi)
            if a < b:
                segments.append((s.file, int(a - lo), int(b - lo), s.sha256))
        pieces.append(Piece(first, end, tuple(segments)))
    return pieces


def _piece_batches(emb_dir: str, piece: Piece, columns: list[str] | None,
                   batch_rows: int = 65536) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """(metadata table, float32 [rows, dim]) batches of a piece, read on an executor; each
    file is checked against the manifest's sha256 first."""
    for name, lo, hi, sha in piece.segments:
        path = safe_child(emb_dir, name)
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing (or not visible from this executor: "
                                    "the embeddings directory must be on a shared filesystem)")
        if sha256_file(path) != sha:
            raise ValueError(f"{path} is corrupted or was modified (sha256 differs from the "
                             "manifest); re-run `mimicsearch encode`")
        start = 0
        want = None if columns is None else list(dict.fromkeys([*columns, EMBEDDING]))
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=want):
            end = start + batch.num_rows
            a, b = max(lo, start), min(hi, end)
            if a < b:
                table = pa.Table.from_batches([batch.slice(a - start, b - a)])
                yield table.drop_columns([EMBEDDING]), embedding_matrix(table)
            start = end
            if start >= hi:
                break


def _sample_task(emb_dir: str, piece: Piece, wanted: np.ndarray):
    """(global rows, vectors) of the `wanted` rows that fall in this piece."""
    rows, vecs = [], []
    row = piece.first_row
    for _, mat in _piece_batches(emb_dir, piece, ["id"]):
        lo, hi = np.searchsorted(wanted, [row, row + len(mat)])
        rows.append(wanted[lo:hi])
        vecs.append(mat[wanted[lo:hi] - row])
        row += len(mat)
    dim = vecs[0].shape[1] if vecs else 0
    return (np.concatenate(rows) if rows else np.zeros(0, np.int64),
            np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float32))


def _add_task(emb_dir: str, out_dir: str, piece: Piece, trained: np.ndarray,
              eval_q: np.ndarray, id_type: str, k: int):
    """Add one piece to a copy of the trained index, write it and its store part; return
    them with this piece's exact top-k for the evaluation queries."""
    faiss.omp_set_num_threads(_task_cpus())
    index = faiss.deserialize_index(trained)
    out = Path(out_dir)
    heap = faiss.ResultHeap(len(eval_q), k, keep_max=True)
    tables, row = [], piece.first_row
    for table, vecs in _piece_batches(emb_dir, piece, None):
        vecs = ix.check_vectors(vecs, index.d)
        ids = np.arange(row, row + len(vecs), dtype=np.int64)
        index.add_with_ids(vecs, ids)
        heap.add_result(eval_q @ vecs.T, np.broadcast_to(ids, (len(eval_q), len(ids))))
        tables.append(store_table(table, row, id_type))
        row += len(vecs)
    if row != piece.end_row:
        raise ValueError(f"{emb_dir}: rows {piece.first_row}..{piece.end_row} yielded "
                         f"{row - piece.first_row} vectors")
    heap.finalize()
    shard = Shard(ix._write_index(index, out, "shard"), int(index.ntotal), piece.first_row, row)
    part = write_part(out, pa.concat_tables(tables))
    return piece.first_row, shard.to_dict(), part.to_dict(), heap.D, heap.I


@ix.index_writer(1)
def build_index_spark(embeddings_dir: str | Path, out_dir: str | Path, *,
                      model_dir: str = "", memory_bytes: int | None = None,
                      index_key: str | None = None, shard_size: int | None = None,
                      merge: bool = False, recall_target: float = 0.95, seed: int = 0,
                      eval_queries: int | None = None, partitions: int | None = None,
                      progress: bool = True, master: str | None = None,
                      spark: SparkSession | None = None) -> IndexManifest:
    """`build-index --engine spark` over an embeddings directory.

    The driver picks the index (choose_index) and draws the training and evaluation samples
    exactly as the local build does (same seed, same rows, so the same trained quantizer);
    executors read the sampled rows, then each adds one piece of consecutive rows (global
    ids = corpus row numbers) to a copy of the trained index and writes it as a shard with
    its store part. The driver writes the manifest, merges IVF shards on disk if asked, and
    measures recall. Shards: `shard_size` rows each, else one per partition (default
    parallelism); all are searched together, as a local sharded index is.
    """
    t0 = time.perf_counter()
    emb_dir, out = Path(embeddings_dir).resolve(), Path(out_dir).resolve()
    ix.check_build_args(out, recall_target, shard_size)
    ix.sweep_orphans(out, None)
    m = EmbeddingsManifest.load(emb_dir)
    if not m.complete:
        raise ValueError(f"{emb_dir} holds an unfinished `encode` run; re-run the same "
                         "command to finish it")
    n, dim = m.rows, m.dim
    choice = ix.choose_index(n, dim, memory_bytes, index_key)
    if merge and "IVF" not in choice.key.upper():
        raise ValueError(f"only IVF indexes can be merged on disk; this one is "
                         f"{choice.key!r} (build with an IVF --index-key to merge)")
    spark = spark or spark_session(master, progress=progress)
    sc = spark.sparkContext

    # The same draws, in the same order, as index.build_index: same samples for one seed.
    rng = np.random.default_rng(seed)
    n_train = ix.train_rows_for(choice, n, dim)
    n_eval = min(ix.EVAL_QUERIES if eval_queries is None else eval_queries, n)
    eval_rows = np.sort(rng.choice(n, n_eval, replace=False))
    train_rows = np.sort(rng.choice(n, n_train, replace=False)) if n_train else eval_rows[:0]
    both = np.union1d(train_rows, eval_rows)

    rows_per_piece = shard_size or -(-n // (partitions or sc.defaultParallelism))
    pieces = plan_pieces(m, rows_per_piece)
    wanted = sc.broadcast(both)
    got = (sc.parallelize(pieces, len(pieces))
           .map(lambda p: _sample_task(str(emb_dir), p, wanted.value)).collect())
    rows = np.concatenate([r for r, _ in got])
    sample = np.concatenate([v for _, v in got])[np.argsort(rows)]
    if not np.array_equal(np.sort(rows), both):
        raise ValueError(f"{emb_dir}: the sampled rows could not all be read back")
    train = ix.check_vectors(sample[np.searchsorted(both, train_rows)], dim, "training vectors")
    eval_q = ix.check_vectors(sample[np.searchsorted(both, eval_rows)], dim, "vectors")

    trained = ix.new_index(choice.key, dim)
    if not trained.is_trained:
        trained.train(train)
    out.mkdir(parents=True, exist_ok=True)
    trained_ref = ix._write_index(trained, out, "trained")

    k = min(ix.EVAL_K + 1, n)
    blob, queries = sc.broadcast(faiss.serialize_index(trained)), sc.broadcast(eval_q)
    id_type = m.id_type
    results = (sc.parallelize(pieces, len(pieces))
               .map(lambda p: _add_task(str(emb_dir), str(out), p, blob.value, queries.value,
                                        id_type, k)).collect())
    for b in (wanted, blob, queries):
        b.unpersist()
    results.sort(key=lambda r: r[0])
    exact = faiss.ResultHeap(n_eval, k, keep_max=True)
    for _, _, _, D, I in results:
        exact.add_result(D, I)
    exact.finalize()

    build = BuildParams(choice.key, choice.family, choice.reason, memory_bytes,
                        choice.estimated_bytes, rows_per_piece if len(pieces) > 1 else shard_size,
                        choice.nlist, n_train, seed,
                        f"embeddings:{emb_dir} (spark, {len(pieces)} tasks)")
    manifest = IndexManifest(
        model_fingerprint=m.model_fingerprint, model_dir=str(model_dir), dimension=dim,
        index_key=choice.key, family=choice.family, trained=trained_ref,
        shards=tuple(Shard.from_dict(r[1]) for r in results),
        store_parts=tuple(StorePart.from_dict(r[2]) for r in results), rows=n, build=build,
        id_type=id_type)
    manifest.validate()
    manifest.save(out)
    if merge:
        manifest = ix.merge_shards(out)
    quality = ix.measure_quality(ix.open_index(out, verify=False), eval_q, eval_rows, exact.I,
                              recall_target)
    build = replace(build, seconds=round(time.perf_counter() - t0, 3))
    manifest = manifest.with_(quality=quality, search_params=quality.search_params, build=build)
    manifest.save(out)
    return manifest


def build_index_from_spark(input_path: str | Path, out_dir: str | Path,
                           model_dir: str | Path | None = None, *, text_col: str | None = None,
                           id_col: str | None = None, dim: int | None = None,
                           long: str = "truncate", threads: int | None = None,
                           partitions: int | None = None, progress: bool = True,
                           master: str | None = None, spark: SparkSession | None = None,
                           **build: object) -> IndexManifest:
    """`build-index --engine spark`: notes are encoded into OUT/embeddings by Spark (keeping
    snippet text), an embeddings directory is used as it is; then build_index_spark().
    Keyword arguments in `build` go to build_index_spark()."""
    out = Path(out_dir).resolve()
    if (out / MANIFEST).exists():
        raise FileExistsError(f"{out} already holds an index; use `mimicsearch add` to extend "
                              "it or choose another --out")
    input_path = Path(input_path)
    if input_path.is_dir():
        emb_dir = input_path
        ix.open_input(input_path, model_dir, out / "embeddings")  # checks the model fingerprint
    elif model_dir is None:
        raise ValueError(f"{input_path} holds notes: pass --model to encode them")
    spark = spark or spark_session(master, progress=progress)
    if not input_path.is_dir():
        emb_dir = out / "embeddings"
        encode_corpus_spark(input_path, model_dir, emb_dir, text_col=text_col, id_col=id_col,
                            dim=dim, long=long, threads=threads, partitions=partitions,
                            keep_text_chars=2 * SNIPPET_CHARS, spark=spark)
    return build_index_spark(emb_dir, out,
                             model_dir=str(Path(model_dir).resolve()) if model_dir else "",
                             partitions=partitions, spark=spark, **build)
