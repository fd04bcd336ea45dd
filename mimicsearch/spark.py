"""The Spark engine: encode note tables and build index directories on a cluster.

Spark only decides where the work runs. Executors use the same `Encoder` (same sorting and
token-budget batching) and the same index functions as the local engine, and the result is
the same embeddings directory (embeddings.py) and the same index directory
(index/manifest.py): `mimicsearch query` and `info` cannot tell which engine built it.

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
from pyspark import SparkFiles, TaskContext
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from .corpus import EncodeSummary
from .embeddings import (
    EMBEDDING,
    REJECTS,
    EmbeddingsManifest,
    EmbeddingsShard,
    ShardWriter,
    claim_out,
    embedding_column,
    own_files,
    remove_run,
    shard_schema,
    text_hash_column,
)
from .encoder import Encoder, LongMode
from .fileio import MANIFEST, sweep_new, writer
from .index import BuildOptions, EmbeddingsSource, IndexManifest, Piece
from .index.build import (
    PieceResult,
    add_piece,
    claim_out_dir,
    finish_build,
    plan_build,
    train_quantizer,
)
from .model_manifest import ModelManifest
from .options import EncodeOptions
from .readers import (
    Columns,
    InputFormat,
    MalformedInputError,
    Reader,
    detect_format,
    is_table,
    write_rejects,
)

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
    options: EncodeOptions
    shipped: bool = False  # model_dir is the name of a directory added with addFile
    threads: int | None = None  # None: spark.task.cpus

    def check(self) -> ModelManifest:
        """Refuse a bad dim/prompt/long on the driver, before any task starts."""
        if self.shipped:
            raise ValueError("check() runs on the driver, before the model is shipped")
        o = self.options
        m = ModelManifest.load(self.model_dir)
        m.variant(o.precision, o.runtime)
        dims = sorted({m.dimension, *m.matryoshka_dims}, reverse=True)
        if o.dim is not None and o.dim not in dims:
            raise ValueError(f"dim={o.dim} is not a Matryoshka dimension of "
                             f"{m.source_model}; valid: {dims}")
        valid = sorted({"query", "document", *m.prompts})
        if o.prompt is not None and o.prompt not in valid:
            raise ValueError(f"unknown prompt {o.prompt!r}; valid: {valid} or None")
        if o.max_length is not None and not 8 <= o.max_length <= m.max_seq_length:
            raise ValueError(f"max_length={o.max_length}: must be between 8 and the model's "
                             f"max_seq_length {m.max_seq_length}")
        if LongMode(o.long) is LongMode.WINDOWS:
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
        key = (path, threads, self.options.precision, self.options.runtime,
               self.options.max_length)
        enc = _ENCODERS.get(key)
        if enc is None:
            enc = _ENCODERS[key] = Encoder(path, threads=threads,
                                           precision=self.options.precision,
                                           runtime=self.options.runtime,
                                           max_length=self.options.max_length)
        return enc

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(float32 [n, dim] vectors, bool [n] truncated) for texts, in order."""
        o = self.options
        enc = self.encoder().encode_detailed(texts, o.prompt, o.dim, o.long)
        return enc.vectors, enc.truncated


_ENCODERS: dict[tuple, Encoder] = {}


def model_spec(spark: SparkSession, model_dir: str | Path, options: EncodeOptions, *,
               ship_model: bool = False, threads: int | None = None) -> EncodeSpec:
    """An EncodeSpec for `model_dir`, checked on the driver; with ship_model the directory
    is copied to every executor by SparkContext.addFile (no shared filesystem needed).

    The driver's variant is pinned: an executor on another CPU (or without OpenVINO) runs
    it or fails, never quietly encodes its part of the corpus with another variant."""
    model_dir = Path(model_dir).resolve()
    spec = EncodeSpec(str(model_dir), options, threads=threads)
    chosen = spec.check().variant(options.precision, options.runtime)
    spec = replace(spec, options=replace(options, precision=chosen.precision.value,
                                         runtime=chosen.runtime.value))
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
                    precision: str | None = None, runtime: str | None = None,
                    long: str = "truncate",
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
    options = EncodeOptions(prompt=prompt, dim=dim, long=long, precision=precision,
                            runtime=runtime)
    spec = model_spec(df.sparkSession, model_dir, options, ship_model=ship_model,
                      threads=threads)
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


def read_notes_dataframe(spark: SparkSession, path: str | Path, input_format: str | None = None,
               delimiter: str | None = None) -> DataFrame:
    """A notes file as a DataFrame: CSV/TSV (RFC 4180 quoting, multi-line notes), Parquet or
    JSONL. CSV columns stay strings; malformed CSV fails the job instead of dropping rows."""
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


def local_decisions(input_path: str | Path, options: EncodeOptions
                    ) -> tuple[Columns, pa.Table, list, int]:
    """Which records a notes file's encode keeps, decided by the local engine's Reader in
    one pass on the driver (no encoding): (columns, accepted records as `_rec` (1-based
    record number), `line` and `id`, rejects, records read). Both engines thus make the same
    decision for every row and report it by the same source line."""
    reader = Reader(input_path, options.text_col, options.id_col,
                    None if options.keep is None else list(options.keep), options.id_type,
                    options.input_format, columns=options.columns)
    cols = reader.columns
    numbers, lines, ids, rejects, read = [], [], [], [], 0
    for batch in reader:
        read += batch.records
        numbers += batch.numbers
        lines += batch.lines.tolist()
        ids += batch.ids
        rejects += batch.rejects
    id_type = pa.int64() if cols.id_type.value == "int64" else pa.string()
    accepted = pa.table({"_rec": pa.array(numbers, pa.int64()),
                         "line": pa.array(lines, pa.int64()), "id": pa.array(ids, id_type)})
    return cols, accepted, rejects, read


@writer("out_dir")
def encode_corpus_spark(input_path: str | Path, *, model_dir: str | Path,
                        out_dir: str | Path, options: EncodeOptions | None = None,
                        threads: int | None = None, partitions: int | None = None,
                        ship_model: bool = False, overwrite: bool = False,
                        progress: bool = True, master: str | None = None,
                        spark: SparkSession | None = None) -> EncodeSummary:
    """`encode --engine spark`: read a notes file with Spark, encode it on the executors and
    write the embeddings directory `mimicsearch encode` writes (one shard and its snippets
    per partition, rows in input order, rejects.csv).

    Which rows are kept is decided on the driver by the local engine's reader (one pass,
    no encoding), so both engines keep the same rows and name rejects by the same lines;
    Spark reads the file again for the texts and encodes them on the executors.
    """
    t0 = time.perf_counter()
    if isinstance(input_path, (list, tuple)):
        if len(input_path) != 1:
            raise ValueError("the Spark engine reads one notes file; encode several (e.g. "
                             "MIMIC-IV-Note's discharge and radiology) with --engine local, "
                             "or concatenate them into one file first")
        input_path = input_path[0]
    if is_table(input_path):
        raise ValueError("the Spark engine reads notes files; encode an in-memory table with "
                         "the local engine, or a Spark DataFrame with embed_dataframe()")
    out = Path(out_dir).resolve()
    o = options or EncodeOptions()
    claim_out(out, "encode")
    if (out / MANIFEST).exists() and not overwrite:
        raise FileExistsError(f"{out} already holds an embeddings directory; choose "
                              "another --out or pass --overwrite (the Spark engine does "
                              "not resume)")
    remove_run(out)
    spark = spark or spark_session(master, progress=progress)
    spec = model_spec(spark, model_dir, o, ship_model=ship_model, threads=threads)
    manifest = ModelManifest.load(model_dir)
    out_dim = o.dim or manifest.dimension
    cols, accepted, rejects, read = local_decisions(input_path, o)
    int_ids = cols.id_type.value == "int64"
    with _malformed_input(input_path):
        raw = read_notes_dataframe(spark, input_path, o.input_format)
        numbered, total = number_records(raw)
    if total != read:
        raise MalformedInputError(
            f"{input_path}: Spark reads {total} records where the file holds {read}; encode "
            "it with --engine local")
    good = numbered.join(spark.createDataFrame(accepted), "_rec").select(
        "_rec", "line", "id", *[F.col(_quoted(k)).cast("string").alias(k) for k in cols.keep],
        F.col(_quoted(cols.text)).cast("string").alias("_text"))
    n_parts = partitions or spark.sparkContext.defaultParallelism
    good = good.repartitionByRange(n_parts, "line").sortWithinPartitions("line")
    schema = shard_schema(out_dim, "int64" if int_ids else "string", list(cols.keep), False)
    out.mkdir(parents=True, exist_ok=True)
    with _malformed_input(input_path):
        written = good.mapInArrow(
            _shard_writer(spec, str(out), schema, list(cols.keep)),
            "pid int, file string, rows long, sha256 string, snippets string, "
            "snippets_sha256 string, truncated long, last_line long, last_record long",
        ).collect()

    written = sorted(written, key=lambda r: r["pid"])
    reject_lines = np.array([r.line for r in rejects], dtype=np.int64)
    shards, before = [], 0
    for r in written:
        upto = int(np.searchsorted(reject_lines, r["last_line"], side="right"))
        shards.append(EmbeddingsShard(r["file"], r["rows"], r["sha256"], r["last_record"],
                                      upto - before, r["truncated"], r["snippets"],
                                      r["snippets_sha256"]))
        before = upto
    write_rejects(out / REJECTS, rejects)
    rows = sum(s.rows for s in shards)
    truncated = sum(s.truncated for s in shards)
    settings = {"engine": "spark", "input": str(Path(input_path).resolve()),
                "text_col": cols.text, "id_col": cols.id, "keep": list(cols.keep),
                "id_type": cols.id_type.value, "schema": cols.schema.to_dict(),
                "model_fingerprint": manifest.fingerprint,
                "model_file_sha256": manifest.variant(o.precision, o.runtime).sha256,
                "options": o.to_dict(), "prompt": o.prompt, "dim": out_dim, "long": o.long,
                "max_length": o.max_length or manifest.max_seq_length}
    done = EmbeddingsManifest(
        model_fingerprint=manifest.fingerprint, dim=out_dim, rows=rows, shards=tuple(shards),
        columns=tuple(n for n in schema.names if n != EMBEDDING),
        id_type="int64" if int_ids else "string", long=o.long, complete=True,
        settings=settings, rejected=len(rejects), truncated=truncated)
    done.save(out)
    sweep_new(out, own_files(done))  # drops the new-file marks
    seconds = time.perf_counter() - t0
    return EncodeSummary(
        input=str(input_path), out_dir=str(out), read=read, encoded=rows,
        rejected=len(rejects), truncated=truncated, rows_written=rows, shards=len(shards),
        dimension=out_dim, resumed_at=0, seconds=round(seconds, 3),
        notes_per_s=round(rows / seconds, 1) if seconds else 0.0)


def _shard_writer(spec: EncodeSpec, out_dir: str, schema: pa.Schema, keep: list[str]):
    """The mapInArrow function: encode one partition, write it as one shard file and its
    snippets file."""

    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        pid = TaskContext.get().partitionId()
        shard, truncated, last, last_record = None, 0, 0, 0
        try:
            for batch in batches:
                if batch.num_rows == 0:
                    continue
                texts = batch.column("_text").to_pylist()
                vectors, trunc = spec.encode(texts)
                arrays = [batch.column("id").cast(schema.field("id").type),
                          batch.column("line")]
                arrays += [batch.column(k) for k in keep]
                arrays += [text_hash_column(texts), embedding_column(vectors)]
                if shard is None:
                    shard = ShardWriter(Path(out_dir), pid, schema, spec.options.snippets,
                                        spec.options.full_text)
                shard.write(pa.Table.from_arrays(arrays, schema=schema), texts)
                truncated += int(trunc.sum())
                last = int(batch.column("line")[-1].as_py())
                last_record = int(batch.column("_rec")[-1].as_py())
        except BaseException as e:
            if shard is not None:
                shard.abort(e)
            raise
        if shard is not None:
            sha256, snippets_sha256 = shard.close()
            yield pa.RecordBatch.from_pydict(
                {"pid": [pid], "file": [shard.name], "rows": [shard.rows], "sha256": [sha256],
                 "snippets": [shard.snippets], "snippets_sha256": [snippets_sha256],
                 "truncated": [truncated], "last_line": [last], "last_record": [last_record]},
                schema=pa.schema([("pid", pa.int32()), ("file", pa.string()),
                                  ("rows", pa.int64()), ("sha256", pa.string()),
                                  ("snippets", pa.string()), ("snippets_sha256", pa.string()),
                                  ("truncated", pa.int64()), ("last_line", pa.int64()),
                                  ("last_record", pa.int64())]))

    return write


# ---------------------------------------------------------------------------------------
# An embeddings directory to an index directory


def _sample_piece(source: EmbeddingsSource, piece: Piece, wanted: np.ndarray) -> np.ndarray:
    return source.take(piece.rows_in(wanted))


def _add_piece_task(source: EmbeddingsSource, out: Path, built) -> Callable[[Piece],
                                                                             PieceResult]:
    def run(piece: Piece) -> PieceResult:
        faiss.omp_set_num_threads(_task_cpus())
        plan, trained = built.value
        return add_piece(out, plan, trained, piece, source.read(piece.first_row,
                                                                 piece.end_row))
    return run


@writer("out_dir")
def build_index_spark(embeddings_dir: str | Path, *, out_dir: str | Path,
                      model_dir: str = "", options: BuildOptions | None = None,
                      partitions: int | None = None, progress: bool = True,
                      master: str | None = None,
                      spark: SparkSession | None = None) -> IndexManifest:
    """`build-index --engine spark` over an embeddings directory: index.build's four steps,
    with the samples read and the pieces added on the executors.

    The driver hashes every shard once, plans (same seed, same draws as the local build),
    trains the quantizer and finishes (manifest, merge on disk, recall). Pieces: `shard_size`
    rows each, else one per partition (default parallelism); all are searched together, as
    a local sharded index is.
    """
    t0 = time.perf_counter()
    emb_dir, out = Path(embeddings_dir).resolve(), Path(out_dir).resolve()
    options = options or BuildOptions()
    claim_out_dir(out)
    source = EmbeddingsSource(emb_dir).verify()
    spark = spark or spark_session(master, progress=progress)
    sc = spark.sparkContext
    per_task = options.shard_size or -(-source.rows // (partitions or sc.defaultParallelism))
    plan = plan_build(source, options, per_task)
    wanted = sc.broadcast(plan.sample_rows)
    sample = np.concatenate(
        sc.parallelize(plan.pieces, len(plan.pieces))
        .map(lambda p: _sample_piece(source, p, wanted.value)).collect())
    trained = train_quantizer(out, plan, sample)
    built = sc.broadcast((plan, trained))
    results = (sc.parallelize(plan.pieces, len(plan.pieces))
               .map(_add_piece_task(source, out, built)).collect())
    for b in (wanted, built):
        b.unpersist()
    return finish_build(out, plan, trained, results, model_fingerprint=source.manifest
                        .model_fingerprint, model_dir=str(model_dir),
                        source=f"{source.description} (spark, {len(plan.pieces)} tasks)",
                        encode=source.manifest.encode_options(), started=t0,
                        progress=progress)
