"""Building an index directory in four steps: plan, train the quantizer, add pieces, finish.

Both engines run exactly these steps. The local loop calls them in turn; on Spark the driver
plans, trains and finishes while executors read the samples (`VectorSource.take`) and run
`add_piece`, one piece of consecutive rows each. Same seed, same plan, same trained
quantizer, same files. IVF-type indexes are trained once on a sample; every shard is a copy
of the trained empty index, so shards share their quantizer and can be merged on disk.
"""
from __future__ import annotations

import dataclasses
import functools
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
from tqdm import tqdm

from ..fileio import MANIFEST, mark_new, refuse_foreign, writer
from ..schema import NoteSchema
from .choice import IndexChoice, choose_index, train_rows_for
from .commit import foreign_in_index, sweep_orphans
from .edit import merge_shards
from .faiss_ops import faiss_message, new_index, write_index
from .lexical import ANALYZER, SegmentWriter
from .loaded import open_index
from .manifest import BuildParams, FileRef, IndexManifest, IndexShard, LexicalPart, StorePart
from .pooled import PatientSums
from .sources import VectorSource, check_vectors
from .store import FULL_TEXT, MetadataStore, PartWriter, document_rows, store_table
from .tune import EVAL_K, EVAL_QUERIES, measure_quality


@dataclass(frozen=True)
class BuildOptions:
    """How to build: shared by both engines and recorded in the index manifest."""

    memory_bytes: int | None = None  # RAM budget for choose_index (None: no budget)
    index_key: str | None = None  # a faiss factory string overriding the choice
    shard_size: int | None = None  # vectors per shard (None: one shard, or one per task)
    merge: bool = False  # IVF only: merge the shards into one on-disk index
    recall_target: float = 0.95
    seed: int = 0
    eval_queries: int = EVAL_QUERIES
    lexical: bool = True  # BM25 over the whole texts too, where the notes' texts are kept

    def __post_init__(self):
        if not 0 < self.recall_target <= 1:
            raise ValueError(f"recall target {self.recall_target} must be in (0, 1]")
        if self.shard_size is not None and self.shard_size <= 0:
            raise ValueError(f"shard size must be positive, got {self.shard_size}")
        if self.eval_queries < 1:
            raise ValueError(f"eval_queries={self.eval_queries}: must be >= 1")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Piece:
    """Consecutive corpus rows [first_row, end_row), built into one shard."""

    first_row: int
    end_row: int

    def rows_in(self, rows: np.ndarray) -> np.ndarray:
        """The sorted `rows` that fall in this piece."""
        lo, hi = np.searchsorted(rows, [self.first_row, self.end_row])
        return rows[lo:hi]


@dataclass(frozen=True)
class BuildPlan:
    """Everything decided before any vector is added."""

    choice: IndexChoice
    rows: int
    dim: int
    id_type: str
    train_rows: np.ndarray  # int64, sorted
    eval_rows: np.ndarray  # int64, sorted
    rows_per_piece: int
    pieces: tuple[Piece, ...]
    options: BuildOptions
    schema: NoteSchema | None = None  # the notes' roles (schema.py)

    @property
    def sample_rows(self) -> np.ndarray:
        """The rows the driver needs before adding: training and evaluation vectors."""
        return np.union1d(self.train_rows, self.eval_rows)

    @property
    def k(self) -> int:
        return min(EVAL_K + 1, self.rows)


@dataclass(frozen=True)
class Trained:
    """The trained empty index, serialized so it travels to executors, and the evaluation
    queries every piece scores exactly."""

    ref: FileRef
    blob: np.ndarray
    eval_queries: np.ndarray  # float32 [n_eval, dim]


@dataclass(frozen=True)
class PieceResult:
    shard: IndexShard
    part: StorePart
    exact_scores: np.ndarray  # float32 [n_eval, k]: this piece's exact top-k per eval query
    exact_rows: np.ndarray  # int64 [n_eval, k]
    lexical: tuple | None = None  # the piece's lexical segments; None: a note had no text
    patients: PatientSums | None = None  # its rows' vector sums by patient


def claim_out_dir(out: Path) -> None:
    """The one rule for an --out that already holds something: a finished index is refused;
    a build killed before its tuning step (a manifest without quality) is built again; a
    directory holding any file an index build did not write is refused, and nothing in it
    is touched."""
    m = None
    if (out / MANIFEST).exists():
        try:
            m = IndexManifest.load(out)
        except ValueError as e:
            raise FileExistsError(f"{out} holds a directory that is not an index ({e}); "
                                  "choose another --out") from None
        if m.quality is not None:
            raise FileExistsError(f"{out} already holds an index; use `mimicsearch add` or "
                                  "`sync` to change it, or choose another --out")
    refuse_foreign(out, foreign_in_index(out, m), "an index build",
                   "choose a new or empty --out")
    if m is not None:  # killed before tuning: its files are ours, built again
        for f in m.files():
            mark_new(out / f.file)
        (out / MANIFEST).unlink()
    if out.is_dir():
        sweep_orphans(out, None)


def plan_build(source: VectorSource, options: BuildOptions,
               rows_per_piece: int | None = None) -> BuildPlan:
    """Choose the index and draw the samples (one seed, one order of draws); cut the corpus
    into pieces of `rows_per_piece` rows (default: the shard size, else one piece)."""
    n, dim = source.rows, source.dim
    choice = choose_index(n, dim, options.memory_bytes, options.index_key)
    if options.merge and "IVF" not in choice.key.upper():
        raise ValueError(f"only IVF indexes can be merged on disk; this one is "
                         f"{choice.key!r} (build with an IVF --index-key to merge)")
    rng = np.random.default_rng(options.seed)
    n_train = train_rows_for(choice, n, dim)
    eval_rows = np.sort(rng.choice(n, min(options.eval_queries, n), replace=False))
    train_rows = np.sort(rng.choice(n, n_train, replace=False)) if n_train else eval_rows[:0]
    per = max(1, rows_per_piece or options.shard_size or n)
    pieces = tuple(Piece(a, min(a + per, n)) for a in range(0, n, per))
    return BuildPlan(choice, n, dim, source.id_type, train_rows.astype(np.int64),
                     eval_rows.astype(np.int64), per, pieces, options,
                     getattr(source, "schema", None))


def train_quantizer(out: Path, plan: BuildPlan, sample: np.ndarray) -> Trained:
    """Train the empty index on the sampled rows (`sample` is float32 [len(sample_rows),
    dim], in sample_rows order) and write it."""
    both = plan.sample_rows
    train = check_vectors(sample[np.searchsorted(both, plan.train_rows)], plan.dim,
                          "training vectors")
    eval_q = check_vectors(sample[np.searchsorted(both, plan.eval_rows)], plan.dim, "vectors")
    index = new_index(plan.choice.key, plan.dim)
    if not index.is_trained:
        try:
            index.train(train)
        except RuntimeError as e:  # e.g. fewer vectors than IVF lists or PQ centroids
            raise ValueError(f"faiss cannot train {plan.choice.key!r} on {len(train)} vectors "
                             f"({faiss_message(e)}); give a smaller --index-key or let "
                             "build-index choose") from None
    out.mkdir(parents=True, exist_ok=True)
    return Trained(write_index(index, out, "trained"), faiss.serialize_index(index), eval_q)


def add_piece(out: Path, plan: BuildPlan, trained: Trained, piece: Piece,
              batches: Iterable[tuple[np.ndarray, pa.Table]],
              on_rows: Callable[[int], object] | None = None) -> PieceResult:
    """Add one piece's rows (global ids = corpus row numbers) to a copy of the trained
    index; write it as a shard with its store part, and score the piece exactly against the
    evaluation queries."""
    index = faiss.deserialize_index(trained.blob)
    lexical = SegmentWriter(out, piece.first_row) if plan.options.lexical else None
    eval_q = trained.eval_queries
    heap = faiss.ResultHeap(len(eval_q), plan.k, keep_max=True)
    part, subjects, sums, row = PartWriter(out), [], None, piece.first_row
    subject = plan.schema.subject if plan.schema is not None else None
    try:
        for vecs, meta in batches:
            vecs = check_vectors(vecs, plan.dim)
            ids = np.arange(row, row + len(vecs), dtype=np.int64)
            index.add_with_ids(vecs, ids)
            heap.add_result(eval_q @ vecs.T, np.broadcast_to(ids, (len(eval_q), len(ids))))
            table = store_table(meta, row, plan.id_type)
            if lexical is not None:
                docs = document_rows(table)
                lexical.add(table.column(FULL_TEXT).take(pa.array(docs)).to_pylist()
                            if FULL_TEXT in table.column_names else [None] * len(docs),
                            docs + row)
            if subject in table.column_names:  # keyed by the raw text within the piece
                subjects += table.column(subject).chunks
                batch = PatientSums.of(table.column(subject), ids, vecs)
                sums = batch if sums is None else sums.combine(
                    batch, pa.chunked_array(subjects, pa.string()), piece.first_row)
            part.add(table)
            row += len(vecs)
            if on_rows is not None:
                on_rows(len(vecs))
    except BaseException as e:
        part.abort(e)
        raise
    if row != piece.end_row:
        part.abort(ValueError())
        raise ValueError(f"rows {piece.first_row}..{piece.end_row} of the source yielded "
                         f"{row - piece.first_row} vectors")
    heap.finalize()
    shard = IndexShard(write_index(index, out, "shard"), int(index.ntotal), piece.first_row, row)
    del index
    segments = None if lexical is None else lexical.finish(row)
    return PieceResult(shard, part.close(), heap.D, heap.I,
                       None if segments is None else tuple(segments), sums)


def finish_build(out: Path, plan: BuildPlan, trained: Trained,
                 results: Sequence[PieceResult], *, model_fingerprint: str, model_dir: str,
                 source: str, encode: dict | None = None,
                 started: float | None = None, progress: bool = False) -> IndexManifest:
    """Write the manifest, merge on disk if asked, then measure recall and tune the search
    knob; the manifest is rewritten with the quality last, so a build killed before tuning
    is recognisable (see claim_out_dir)."""
    results = sorted(results, key=lambda r: r.shard.first_row)
    exact = faiss.ResultHeap(len(plan.eval_rows), plan.k, keep_max=True)
    for r in results:
        exact.add_result(r.exact_scores, r.exact_rows)
    exact.finalize()
    o, c = plan.options, plan.choice
    build = BuildParams(c.key, c.family, c.reason, o.memory_bytes, c.estimated_bytes,
                        plan.rows_per_piece if len(plan.pieces) > 1 else o.shard_size,
                        c.nlist, len(plan.train_rows), o.seed, source, options=o.to_dict())
    manifest = IndexManifest(
        model_fingerprint=model_fingerprint, model_dir=str(model_dir), dimension=plan.dim,
        index_key=c.key, family=c.family, trained=trained.ref,
        shards=tuple(r.shard for r in results), store_parts=tuple(r.part for r in results),
        rows=plan.rows, build=build, id_type=plan.id_type, encode=dict(encode or {}),
        schema=plan.schema)
    if all(r.patients is not None for r in results) and results:
        column = MetadataStore.schema_of(out, manifest).subject
        subject = MetadataStore.load(out, manifest, verify=False,
                                     columns=[column]).table.column(column)
        total = functools.reduce(lambda a, b: a.combine(b, subject),
                                 (r.patients for r in results))
        manifest = manifest.with_(patients=total.write(out))
    if o.lexical and all(r.lexical is not None for r in results):
        manifest = manifest.with_(lexical=LexicalPart(
            tuple(s for r in results for s in r.lexical), dict(ANALYZER)))
    manifest.validate()
    manifest.save(out)
    if o.merge:
        manifest = merge_shards(out)
    quality = measure_quality(open_index(out, verify=False), trained.eval_queries,
                              plan.eval_rows, exact.I, o.recall_target)
    seconds = 0.0 if started is None else round(time.perf_counter() - started, 3)
    manifest = manifest.with_(quality=quality, search_params=quality.search_params,
                              build=dataclasses.replace(build, seconds=seconds))
    manifest.save(out)
    sweep_orphans(out, manifest)  # drops the new-file marks of what the manifest now names
    return manifest


@writer("out_dir")
def build_index(source: VectorSource, out_dir: str | Path, *, model_fingerprint: str,
                model_dir: str = "", options: BuildOptions | None = None,
                encode: dict | None = None, progress: bool = True) -> IndexManifest:
    """Build an index directory from `source` on this machine, then measure and tune its
    recall. `encode` records the encode options the vectors were made with."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    claim_out_dir(out)
    plan = plan_build(source, options or BuildOptions())
    trained = train_quantizer(out, plan, source.take(plan.sample_rows))
    with tqdm(total=plan.rows, desc="indexing (vectors + BM25)" if plan.options.lexical
              else "indexing", unit="vec", disable=not progress,
              file=sys.stderr) as bar:
        results = [add_piece(out, plan, trained, p, source.read(p.first_row, p.end_row),
                             bar.update) for p in plan.pieces]
    return finish_build(out, plan, trained, results, model_fingerprint=model_fingerprint,
                        model_dir=model_dir, source=source.description, encode=encode,
                        started=t0, progress=progress)
