"""The embeddings directory: what `mimicsearch encode` writes and the index stage reads.

Layout::

    OUT/manifest.json            EmbeddingsManifest (below)
    OUT/shard-00000.parquet      columns: id, line, [window], kept metadata..., text_hash,
                                 embedding
    OUT/snippets-00000.parquet   column `snippet`: each row's note opening, for hit display;
                                 with `full_text`, also `text`: the whole note (null on a
                                 note's later windows)
    OUT/rejects.csv              line, id, reason[, text]: every input row not encoded
    OUT/embeddings.npy           optional: all embeddings in manifest row order

`embedding` is `fixed_size_list<float32>[dim]`, L2-normalised. `id` is int64 or string
(`id_type`); `line` is the row's first line in the source file (its row number for Parquet).
Metadata columns are strings (null when empty), named as in the source; `text_hash` is the
first 128 bits of the sha256 of the note's text (hex), so `sync` can tell an edited note
without keeping its text. In `windows` mode
each row is one window of a long note: `id` is the parent note's id and `window` its index.
Shards are listed in order; rows are in input order. A shard is complete or absent (atomic
writes) and its sha256 is checked on read. Snippets are cut once, while encoding (both
engines), into a file beside each shard, so no later stage reads the notes file again.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .fileio import (
    MANIFEST,
    atomic_path,
    check_kind,
    foreign_files,
    read_manifest,
    refuse_foreign,
    safe_child,
    sha256_file,
    sweep_new,
    write_json,
)
from .schema import NoteSchema, for_store

FORMAT_VERSION = 1
KIND = "mimicsearch-embeddings"
EMBEDDING = "embedding"
SNIPPET = "snippet"
FULL_TEXT = "text"
TEXT_HASH = "text_hash"
REJECTS = "rejects.csv"
NPY = "embeddings.npy"
SNIPPET_CHARS = 200
_SPACES = re.compile(r"\s+")


def snippet(text: str) -> str:
    """The start of a note on one line, whitespace collapsed."""
    return _SPACES.sub(" ", text[: SNIPPET_CHARS * 2]).strip()[:SNIPPET_CHARS].rstrip()


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def text_hash_column(texts: Sequence[str]) -> pa.Array:
    return pa.array([text_hash(t) for t in texts], pa.string())


def snippets_table(texts: list[str], full: Sequence[str | None] | None = None) -> pa.Table:
    """Openings of `texts`, and with `full` (the whole texts, None where not kept) a
    `text` column."""
    cols = {SNIPPET: pa.array([snippet(t) for t in texts], pa.string())}
    if full is not None:
        cols[FULL_TEXT] = pa.array(list(full), pa.string())
    return pa.table(cols)


def shard_name(i: int) -> str:
    return f"shard-{i:05d}.parquet"


def snippets_name(i: int) -> str:
    return f"snippets-{i:05d}.parquet"


@dataclass(frozen=True)
class EmbeddingsShard:
    file: str
    rows: int
    sha256: str
    # Input records consumed once this shard was written (encoded + rejected): where a
    # resumed run starts reading.
    records_through: int = 0
    rejected: int = 0
    truncated: int = 0
    # The shard's snippets file ("" when encoded without snippets) and its hash.
    snippets: str = ""
    snippets_sha256: str = ""

    @classmethod
    def from_dict(cls, d: dict) -> EmbeddingsShard:
        return cls(str(d["file"]), int(d["rows"]), str(d["sha256"]),
                   int(d.get("records_through", 0)), int(d.get("rejected", 0)),
                   int(d.get("truncated", 0)), str(d.get("snippets", "")),
                   str(d.get("snippets_sha256", "")))


@dataclass(frozen=True)
class EmbeddingsManifest:
    model_fingerprint: str
    dim: int
    rows: int
    shards: tuple[EmbeddingsShard, ...]
    columns: tuple[str, ...]
    id_type: str = "int64"
    long: str = "truncate"
    complete: bool = False
    # The arguments the run was started with; a resumed run must match them.
    settings: dict = field(default_factory=dict)
    rejected: int = 0
    truncated: int = 0
    kind: str = KIND
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shards"] = [asdict(s) for s in self.shards]
        d["columns"] = list(self.columns)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> EmbeddingsManifest:
        check_kind(d, KIND, "mimicsearch encode")
        version = d.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"embeddings format_version {version!r} is not supported "
                             f"(this mimicsearch reads {FORMAT_VERSION}); re-run `encode`")
        try:
            m = cls(
                model_fingerprint=str(d["model_fingerprint"]),
                dim=int(d["dim"]),
                rows=int(d["rows"]),
                shards=tuple(EmbeddingsShard.from_dict(s) for s in d["shards"]),
                columns=tuple(str(c) for c in d["columns"]),
                id_type=str(d.get("id_type", "int64")),
                long=str(d.get("long", "truncate")),
                complete=bool(d.get("complete", False)),
                settings=dict(d.get("settings", {})),
                rejected=int(d.get("rejected", 0)),
                truncated=int(d.get("truncated", 0)),
            )
        except KeyError as e:
            raise ValueError(f"embeddings manifest is missing the field {e.args[0]!r}") from None
        if m.dim <= 0:
            raise ValueError(f"embeddings manifest has dim={m.dim}: must be positive")
        if m.id_type not in ("int64", "string"):
            raise ValueError(f"id_type {m.id_type!r}; valid: ['int64', 'string']")
        if sum(s.rows for s in m.shards) != m.rows:
            raise ValueError(f"rows={m.rows} but the shards hold "
                             f"{sum(s.rows for s in m.shards)}")
        return m

    def save(self, out_dir: str | Path) -> None:
        write_json(Path(out_dir) / MANIFEST, self.to_dict())

    @classmethod
    def load(cls, out_dir: str | Path) -> EmbeddingsManifest:
        return read_manifest(out_dir, cls.from_dict, "mimicsearch encode",
                             lambda m: [f for s in m.shards for f in (s.file, s.snippets) if f])

    def replace(self, **changes) -> EmbeddingsManifest:
        return dataclasses.replace(self, **changes)

    @property
    def schema(self) -> NoteSchema:
        """The notes' roles (recorded in the settings; for a run made before they were,
        the layout its columns fit)."""
        recorded = self.settings.get("schema")
        if recorded:
            return NoteSchema.from_dict(recorded)
        return for_store(self.columns)

    def encode_options(self) -> dict:
        """The encode options the run was given (EncodeOptions.to_dict()), dim resolved."""
        return {**self.settings.get("options", {}), "dim": self.dim, "long": self.long}


def rejects_part(i: int) -> str:
    """Shard i's rejects until the run completes and merges them into rejects.csv."""
    return f".rejects-{i:05d}.csv"


def own_files(m: EmbeddingsManifest | None) -> set[str]:
    """The files of an embeddings directory its manifest vouches for (the layout above)."""
    if m is None:
        return set()
    named = {f for s in m.shards for f in (s.file, s.snippets) if f}
    return named | {MANIFEST, REJECTS, NPY} | {rejects_part(i) for i in range(len(m.shards))}


def claim_out(out: Path, command: str) -> None:
    """Refuse an output directory holding files no encode run wrote; touch nothing in it."""
    m = EmbeddingsManifest.load(out) if (Path(out) / MANIFEST).is_file() else None
    refuse_foreign(out, foreign_files(out, own_files(m)), command,
                   "choose a new or empty --out")


def remove_run(out: Path) -> None:
    """Delete an earlier run: the files its manifest names (the manifest first) and what a
    killed run marked as new; nothing else."""
    out = Path(out)
    m = EmbeddingsManifest.load(out) if (out / MANIFEST).is_file() else None
    (out / MANIFEST).unlink(missing_ok=True)
    for name in own_files(m):
        (out / name).unlink(missing_ok=True)
    sweep_new(out, ())


def is_embeddings_dir(path: str | Path) -> bool:
    """Whether `path` holds an embeddings manifest (not a model's or an index's)."""
    try:
        EmbeddingsManifest.load(path)
    except (FileNotFoundError, ValueError):
        return False
    return True


def shard_schema(dim: int, id_type: str, metadata: list[str], windows: bool) -> pa.Schema:
    fields = [pa.field("id", pa.int64() if id_type == "int64" else pa.string()),
              pa.field("line", pa.int64())]
    if windows:
        fields.append(pa.field("window", pa.int32()))
    fields += [pa.field(c, pa.string()) for c in metadata]
    fields.append(pa.field(TEXT_HASH, pa.string()))
    fields.append(pa.field(EMBEDDING, pa.list_(pa.float32(), dim)))
    return pa.schema(fields)


def embedding_column(vectors: np.ndarray) -> pa.FixedSizeListArray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # [n, dim]
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])


def embedding_matrix(table: pa.Table) -> np.ndarray:
    """The `embedding` column as a float32 [rows, dim] array (no per-row Python)."""
    col = table.column(EMBEDDING).combine_chunks()
    dim = col.type.list_size
    return col.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)  # [rows, dim]


class ShardWriter:
    """Shard `index` of `out` being written, with its snippets file when `snippets`: temp
    Parquet files that become the shard on close(). Both engines write shards through it."""

    def __init__(self, out: Path, index: int, schema: pa.Schema, snippets: bool,
                 full_text: bool = False):
        self.out = Path(out)
        self.name = shard_name(index)
        self.full_text = full_text
        self.snippets = snippets_name(index) if snippets or full_text else ""
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_path(self.out / self.name, new=True))
        self._writers = [pq.ParquetWriter(tmp, schema, compression="zstd")]
        if self.snippets:
            tmp = self._stack.enter_context(atomic_path(self.out / self.snippets, new=True))
            empty = snippets_table([], [] if full_text else None)
            self._writers.append(pq.ParquetWriter(tmp, empty.schema, compression="zstd"))
        self.rows = 0

    def write(self, table: pa.Table, texts: Sequence[str]) -> None:
        """Append `table` (shard schema) and, with snippets, the openings of `texts` (one
        per row of `table`), with `full_text` the whole texts (once per note: a note's
        later windows hold null)."""
        if table.num_rows:
            self._writers[0].write_table(table)
            if self.snippets:
                full = None
                if self.full_text:
                    first = (table.column("window").to_numpy(zero_copy_only=False) == 0
                             if "window" in table.column_names else np.ones(len(texts), bool))
                    full = [t if f else None for t, f in zip(texts, first)]
                self._writers[1].write_table(snippets_table(texts, full))
        self.rows += table.num_rows

    def close(self) -> tuple[str, str]:
        """Publish the files; (shard sha256, snippets sha256 or "")."""
        for w in self._writers:
            w.close()
        self._stack.close()
        return (sha256_file(self.out / self.name),
                sha256_file(self.out / self.snippets) if self.snippets else "")

    def abort(self, exc: BaseException) -> None:
        for w in self._writers:
            w.close()
        self._stack.__exit__(type(exc), exc, exc.__traceback__)


def verify_shard(out_dir: str | Path, s: EmbeddingsShard) -> None:
    """Check a shard (and its snippets file) against the manifest's sha256."""
    for name, sha in ((s.file, s.sha256), (s.snippets, s.snippets_sha256)):
        if not name:
            continue
        path = safe_child(out_dir, name)
        if not path.is_file():
            raise FileNotFoundError(f"{path} listed in {Path(out_dir) / MANIFEST} is missing "
                                    "(or not visible here: Spark executors need a shared "
                                    "filesystem)")
        if sha256_file(path) != sha:
            raise ValueError(f"{path} is corrupted or was modified (sha256 differs from "
                             f"the manifest); re-run `mimicsearch encode`")


def read_shard(out_dir: str | Path, s: EmbeddingsShard, columns: list[str] | None = None,
               snippets: bool = False) -> tuple[pa.Table, np.ndarray]:
    """(table without the embedding column, float32 [rows, dim]) of one shard, unverified;
    `snippets` appends the shard's `snippet` column (and `text`, the whole notes, where
    encode kept them) where it has one."""
    path = safe_child(out_dir, s.file)
    if not path.is_file():
        raise FileNotFoundError(f"{path} listed in {Path(out_dir) / MANIFEST} is missing")
    want = None if columns is None else list(dict.fromkeys([*columns, EMBEDDING]))
    try:
        table = pq.read_table(path, columns=want)
        mat = embedding_matrix(table)
    except (KeyError, pa.ArrowException, AttributeError) as e:
        raise ValueError(f"{path} is not an embeddings shard with the columns its manifest "
                         f"lists ({e}); re-run `mimicsearch encode`") from None
    if table.num_rows != s.rows:
        raise ValueError(f"{path} has {table.num_rows} rows, manifest says {s.rows}")
    table = table.drop_columns([EMBEDDING])
    if snippets and s.snippets:
        side = pq.read_table(safe_child(out_dir, s.snippets))
        if side.num_rows != s.rows or SNIPPET not in side.column_names:
            raise ValueError(f"{out_dir}/{s.snippets} has {side.num_rows} rows, manifest says "
                             f"{s.rows}")
        for name in (SNIPPET, FULL_TEXT):
            if name in side.column_names:
                table = table.append_column(name, side.column(name))
    return table, mat


def complete_manifest(out_dir: str | Path) -> EmbeddingsManifest:
    m = EmbeddingsManifest.load(out_dir)
    if not m.complete:
        raise ValueError(f"{out_dir} holds an unfinished `encode` run "
                         f"({m.rows} rows so far); re-run the same command to finish it")
    return m


def iter_shards(out_dir: str | Path, verify: bool = True, columns: list[str] | None = None,
                snippets: bool = False) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """Yield (table without the embedding column, float32 [rows, dim]) per shard, in order.

    Refuses an unfinished run and a shard whose sha256 differs from the manifest.
    """
    for s in complete_manifest(out_dir).shards:
        if verify:
            verify_shard(out_dir, s)
        yield read_shard(out_dir, s, columns, snippets)


def load_embeddings(out_dir: str | Path, verify: bool = True) -> tuple[pa.Table, np.ndarray]:
    """All rows: (table of id, line, [window], metadata; float32 [rows, dim] embeddings)."""
    m = EmbeddingsManifest.load(out_dir)
    tables, mats = [], []
    for table, mat in iter_shards(out_dir, verify=verify):
        tables.append(table)
        mats.append(mat)
    if not tables:
        metadata = [c for c in m.columns if c not in ("id", "line", "window")]
        schema = shard_schema(m.dim, m.id_type, metadata, m.long == "windows")
        return schema.empty_table().drop_columns([EMBEDDING]), np.zeros((0, m.dim), np.float32)
    return pa.concat_tables(tables), np.concatenate(mats)


def write_embeddings(out_dir: str | Path, batches, *, model_fingerprint: str,
                     metadata: Sequence[str], full_text: bool = True,
                     windows: bool = False, schema: NoteSchema | None = None
                     ) -> EmbeddingsManifest:
    """An embeddings directory from vectors made elsewhere (another encoder, a benchmark's
    stand-in), one shard per batch, laid out as `encode` writes it. `batches` yields
    (ids, vectors float32 [n, dim] unit rows, metadata table with `metadata` columns as
    strings, texts), or with `windows` (ids, window numbers, vectors, metadata, texts), a
    row per window of a note (its text on every row). `schema`: the notes' roles (default:
    the layout the metadata columns fit)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    claim_out(out, "write_embeddings")
    shards, rows, dim, id_type = [], 0, None, "int64"
    for i, batch in enumerate(batches):
        ids, numbers, vectors, meta, texts = batch if windows else (
            batch[0], None, *batch[1:])
        ids = pa.array(ids)
        id_type = "string" if pa.types.is_string(ids.type) else "int64"
        dim = vectors.shape[1]
        shard = shard_schema(dim, id_type, list(metadata), windows)
        table = pa.Table.from_arrays(
            [ids.cast(shard.field("id").type),
             pa.array(np.arange(rows, rows + len(ids)) + 2, pa.int64()),
             *([pa.array(numbers, pa.int32())] if windows else []),
             *(meta.column(c).cast(pa.string()) for c in metadata),
             text_hash_column(texts), embedding_column(vectors)], schema=shard)
        writer = ShardWriter(out, i, shard, snippets=True, full_text=full_text)
        writer.write(table, texts)
        sha, snippets_sha = writer.close()
        rows += len(ids)
        shards.append(EmbeddingsShard(writer.name, len(ids), sha, rows, 0, 0, writer.snippets,
                                      snippets_sha))
    if dim is None:
        raise ValueError("write_embeddings got no batches")
    columns = ("id", "line", *(("window",) if windows else ()), *metadata, TEXT_HASH)
    schema = schema or for_store(columns)
    m = EmbeddingsManifest(model_fingerprint, dim, rows, tuple(shards), columns, id_type,
                           long="windows" if windows else "truncate", complete=True,
                           settings={"schema": schema.to_dict()})
    m.save(out)
    return m
