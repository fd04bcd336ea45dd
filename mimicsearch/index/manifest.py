"""The index directory contract: what `build-index` writes and `query`/`add`/`remove` read.

Layout::

    INDEX/manifest.json              IndexManifest (below)
    INDEX/trained-*.faiss            the empty trained index every shard is cloned from
    INDEX/shard-*.faiss              shards; faiss ids are global store row numbers
    INDEX/merged-*.faiss + .ivfdata  optional: IVF shards merged into one on-disk index
    INDEX/store/part-*.parquet       metadata per row (see store.py)
    INDEX/store/part-*.text.arrow    whole note texts, row for row with their part
    INDEX/store/deleted-*.parquet    rows removed (tombstones; filtered at query time)
    INDEX/lexical-*.{terms,term_offsets,term_indptr,term_docs,term_counts,lengths,rows}.npy
                                     optional: BM25 segments over the notes' texts
                                     (lexical/segment.py)
    INDEX/patients-*.parquet         optional: each patient's sum of stored vectors
                                     (pooled.py)
    INDEX/embeddings/                the encoded corpus, when built from notes

File names carry a random suffix so a rewrite never touches the file the manifest names:
the new file is written, then the manifest, then the old file is unlinked.
"""
from __future__ import annotations

import enum
import itertools
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..fileio import MANIFEST, read_manifest, safe_child, sha256_file, write_json
from ..schema import NoteSchema

FORMAT_VERSION = 2
# Version 1 differs only in its lexical part (one bm25s file set); read where it has none.
READABLE_VERSIONS = (1, 2)
KIND = "mimicsearch-index"
# Files this process has hashed, by (path, inode, size, mtime): a reload skips them.
_VERIFIED: dict[tuple, str] = {}


class Family(str, enum.Enum):
    FLAT = "flat"
    HNSW = "hnsw"
    IVF_FLAT = "ivf_flat"
    IVF_SQ8 = "ivf_sq8"
    IVF_PQ = "ivf_pq"
    CUSTOM = "custom"


@dataclass(frozen=True)
class FileRef:
    """A file in the index directory with the hash it must have, and the writer's stamp of
    it: (inode, ctime ns) right after it was hashed. The kernel moves a file's ctime on any
    write and no call sets it back, so a file still carrying its stamp is the file that was
    hashed and is trusted without reading it again (an index of 10 GB opens in well under
    a second, not in 10 s); any other (modified, copied, restored from a backup, or
    stamped by an older version) is hashed in full. The kernel's clock for ctime is coarse
    (milliseconds): a write in the same tick as the writer's own last write, while the
    writer is still running, is not told apart."""

    file: str
    sha256: str
    size_bytes: int
    stamp: tuple[int, int] | None = None

    @classmethod
    def of(cls, root: str | Path, name: str) -> FileRef:
        path = safe_child(root, name)
        digest = sha256_file(path)
        st = path.stat()
        return cls(name, digest, st.st_size, (st.st_ino, st.st_ctime_ns))

    @classmethod
    def from_dict(cls, d: dict) -> FileRef:
        stamp = d.get("stamp")
        return cls(str(d["file"]), str(d["sha256"]), int(d["size_bytes"]),
                   None if stamp is None else (int(stamp[0]), int(stamp[1])))

    def verify(self, root: str | Path) -> Path:
        """Path of the file after checking size and sha256: a truncated or modified file
        must fail here, with its name, not inside faiss (which may abort the process)."""
        path = safe_child(root, self.file)
        if not path.is_file():
            raise FileNotFoundError(f"{path} listed in {Path(root) / MANIFEST} is missing")
        st = path.stat()
        if st.st_size != self.size_bytes:
            raise ValueError(f"{path} is truncated or was modified: {st.st_size} bytes, the "
                             f"manifest says {self.size_bytes}; rebuild the index with "
                             "`build-index`")
        if self.stamp is not None and (st.st_ino, st.st_ctime_ns) == self.stamp:
            return path  # untouched since its writer hashed it
        key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
        if _VERIFIED.get(key) == self.sha256:
            return path  # index files are never rewritten in place: hashed once is enough
        actual = sha256_file(path)
        if actual == self.sha256:
            _VERIFIED[key] = actual
        if actual != self.sha256:
            raise ValueError(f"{path} is corrupted or was modified: sha256 {actual[:12]}… does "
                             f"not match the manifest's {self.sha256[:12]}…; rebuild the index "
                             "with `build-index`")
        return path


@dataclass(frozen=True)
class IndexShard:
    """One faiss index file holding the rows [first_row, end_row) minus removed ones."""

    index: FileRef
    ntotal: int
    first_row: int
    end_row: int
    # Merged on-disk IVF index: its inverted lists live in `data` and are memory-mapped;
    # such a shard is read-only (removals become tombstones).
    data: FileRef | None = None

    @property
    def merged(self) -> bool:
        return self.data is not None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["data"] = asdict(self.data) if self.data else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> IndexShard:
        return cls(FileRef.from_dict(d["index"]), int(d["ntotal"]), int(d["first_row"]),
                   int(d["end_row"]), FileRef.from_dict(d["data"]) if d.get("data") else None)


@dataclass(frozen=True)
class Quality:
    """Recall measured at build time on queries sampled from the corpus itself."""

    recall_at_10: float
    recall_target: float
    target_met: bool
    queries: int
    k: int
    ms_per_query: float  # median latency of single-query searches at `search_params`
    search_params: dict
    # One row per setting tried, cheapest first: {"nprobe"|"efSearch": value, "recall": r}
    curve: tuple[dict, ...] = ()
    rows_measured: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["curve"] = [dict(c) for c in self.curve]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Quality:
        return cls(float(d["recall_at_10"]), float(d["recall_target"]), bool(d["target_met"]),
                   int(d["queries"]), int(d["k"]), float(d["ms_per_query"]),
                   dict(d["search_params"]), tuple(dict(c) for c in d.get("curve", ())),
                   int(d.get("rows_measured", 0)))


@dataclass(frozen=True)
class Calibration:
    """Which search setting this index's own notes favour (`mimicsearch.calibrate`):
    measured on next-note pairs of its patients, stored so every query can use it (mode
    "auto"), like `Quality`. Settings are {"mode", "fusion"} dicts; `table` holds every
    setting tried with what it measured; `patients` the same for patient search where the
    index holds diagnoses. `changed` counts notes added or removed since (an edit is both),
    so a sync can tell when the measure has gone stale."""

    chosen: dict
    hybrid: dict | None  # the best fusion: what an explicit --mode hybrid uses
    table: tuple[dict, ...]
    pairs: int
    patients: int
    seed: int
    rule: str
    live_notes: int
    seconds: float
    changed: int = 0
    reason: str | None = None  # why the default was kept (too few pairs, no patients)
    patient_search: dict | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["table"] = [dict(r) for r in self.table]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        return cls(dict(d["chosen"]), dict(d["hybrid"]) if d.get("hybrid") else None,
                   tuple(dict(r) for r in d.get("table", ())), int(d["pairs"]),
                   int(d["patients"]), int(d["seed"]), str(d["rule"]), int(d["live_notes"]),
                   float(d["seconds"]), int(d.get("changed", 0)), d.get("reason"),
                   dict(d["patient_search"]) if d.get("patient_search") else None)


@dataclass(frozen=True)
class BuildParams:
    """How the index was built: enough to build it again the same way."""

    index_key: str
    family: Family
    reason: str
    memory_bytes: int | None
    estimated_bytes: int
    shard_size: int | None
    nlist: int
    train_rows: int
    seed: int
    source: str
    seconds: float = 0.0
    options: dict = field(default_factory=dict)  # the BuildOptions given

    def to_dict(self) -> dict:
        d = asdict(self)
        d["family"] = self.family.value
        return d

    @classmethod
    def from_dict(cls, d: dict) -> BuildParams:
        return cls(str(d["index_key"]), _family(d["family"]), str(d["reason"]),
                   None if d.get("memory_bytes") is None else int(d["memory_bytes"]),
                   int(d["estimated_bytes"]),
                   None if d.get("shard_size") is None else int(d["shard_size"]),
                   int(d["nlist"]), int(d["train_rows"]), int(d["seed"]), str(d["source"]),
                   float(d.get("seconds", 0.0)), dict(d.get("options") or {}))


@dataclass(frozen=True)
class StorePart:
    file: FileRef
    rows: int
    # The part's notes in full (Arrow IPC, one `text` column, row for row), where kept.
    text: FileRef | None = None

    def to_dict(self) -> dict:
        d = {"file": asdict(self.file), "rows": self.rows}
        if self.text is not None:
            d["text"] = asdict(self.text)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> StorePart:
        text = d.get("text")
        return cls(FileRef.from_dict(d["file"]), int(d["rows"]),
                   None if text is None else FileRef.from_dict(text))


# A lexical segment's files (segment.py), by role.
SEGMENT_ROLES = ("terms", "term_offsets", "term_indptr", "term_docs", "term_counts",
                 "lengths", "rows")


@dataclass(frozen=True)
class LexicalSegment:
    """One immutable lexical segment: raw term counts of the notes in rows
    [first_row, end_row) that were live when it was written (later removals are the
    store's tombstones)."""

    files: dict  # role -> FileRef
    documents: int
    first_row: int
    end_row: int

    def refs(self) -> list[FileRef]:
        return [self.files[r] for r in SEGMENT_ROLES]

    def to_dict(self) -> dict:
        return {"files": {r: asdict(f) for r, f in self.files.items()},
                "documents": self.documents, "rows": [self.first_row, self.end_row]}

    @classmethod
    def from_dict(cls, d: dict) -> LexicalSegment:
        files = {r: FileRef.from_dict(f) for r, f in dict(d["files"]).items()}
        if set(files) != set(SEGMENT_ROLES):
            raise ValueError(f"lexical segment files {sorted(files)}; expected "
                             f"{sorted(SEGMENT_ROLES)}")
        first, end = d["rows"]
        return cls(files, int(d["documents"]), int(first), int(end))


@dataclass(frozen=True)
class LexicalPart:
    """BM25 over the notes' whole texts: segments in row order and their analysis."""

    segments: tuple[LexicalSegment, ...]
    analyzer: dict

    @property
    def documents(self) -> int:
        """Notes the segments hold, tombstoned ones included until a merge drops them."""
        return sum(s.documents for s in self.segments)

    def refs(self) -> list[FileRef]:
        return [f for s in self.segments for f in s.refs()]

    def to_dict(self) -> dict:
        return {"segments": [s.to_dict() for s in self.segments],
                "analyzer": dict(self.analyzer)}

    @classmethod
    def from_dict(cls, d: dict) -> LexicalPart:
        if "segments" not in d:
            raise ValueError(OLD_LEXICAL)
        return cls(tuple(LexicalSegment.from_dict(s) for s in d["segments"]),
                   dict(d["analyzer"]))


OLD_LEXICAL = ("this index's BM25 part was written by an older mimicsearch as one "
               "whole-corpus file set, before segments; rebuild the index with `build-index` "
               "(from INDEX/embeddings, which an index built from notes keeps, no encoding "
               "is needed)")


@dataclass(frozen=True)
class IndexManifest:
    model_fingerprint: str
    model_dir: str
    dimension: int
    index_key: str
    family: Family
    trained: FileRef
    shards: tuple[IndexShard, ...]
    store_parts: tuple[StorePart, ...]
    rows: int  # store rows ever added = next row number; removed rows keep their number
    build: BuildParams
    id_type: str = "int64"
    deleted: FileRef | None = None
    deleted_rows: int = 0
    # Rows removed from the faiss shards themselves (the rest of deleted_rows are
    # tombstones that queries filter out).
    removed_natively: int = 0
    search_params: dict = field(default_factory=dict)
    quality: Quality | None = None
    metric: str = "inner_product"
    # The encode options the vectors were made with (EncodeOptions.to_dict(), dim resolved);
    # `add` and `query` encode new text the same way. Empty for in-memory vectors.
    encode: dict = field(default_factory=dict)
    # BM25 over the notes' whole texts (lexical/); None where not built.
    lexical: LexicalPart | None = None
    # Each patient's sum of stored vectors over its live rows (pooled.py); None where the
    # notes have no SUBJECT_ID, or for an index built before it was kept.
    patients: FileRef | None = None
    # The search setting chosen on the index's own notes (calibrate.py); None: not measured.
    calibration: Calibration | None = None
    # ICD-9 chapters per admission (build-index --diagnoses), which patient-search
    # calibration scores by; None where not given.
    diagnoses: FileRef | None = None
    # Which stored column plays which role (mimicsearch/schema.py); None for an index
    # built before it was recorded: the layout its store's columns fit (MIMIC-III's).
    schema: NoteSchema | None = None
    kind: str = KIND
    format_version: int = FORMAT_VERSION

    @property
    def live_rows(self) -> int:
        return self.rows - self.deleted_rows

    @property
    def ntotal(self) -> int:
        return sum(s.ntotal for s in self.shards)

    def files(self) -> list[FileRef]:
        out = [self.trained]
        for s in self.shards:
            out += [s.index] + ([s.data] if s.data else [])
        out += [f for p in self.store_parts for f in (p.file, p.text) if f is not None]
        out += self.lexical.refs() if self.lexical else []
        out += [self.patients] if self.patients else []
        out += [self.diagnoses] if self.diagnoses else []
        return out + ([self.deleted] if self.deleted else [])

    def with_(self, **changes) -> IndexManifest:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["family"] = self.family.value
        d["trained"] = asdict(self.trained)
        d["shards"] = [s.to_dict() for s in self.shards]
        d["store_parts"] = [p.to_dict() for p in self.store_parts]
        d["build"] = self.build.to_dict()
        d["deleted"] = asdict(self.deleted) if self.deleted else None
        d["quality"] = self.quality.to_dict() if self.quality else None
        d["lexical"] = self.lexical.to_dict() if self.lexical else None
        d["patients"] = asdict(self.patients) if self.patients else None
        d["calibration"] = self.calibration.to_dict() if self.calibration else None
        d["diagnoses"] = asdict(self.diagnoses) if self.diagnoses else None
        d["schema"] = self.schema.to_dict() if self.schema else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> IndexManifest:
        if d.get("kind") != KIND:
            raise ValueError(f"kind is {d.get('kind')!r}, expected {KIND!r}: not an index "
                             "directory written by `mimicsearch build-index`")
        version = d.get("format_version")
        if version == 1 and d.get("lexical"):
            raise ValueError(OLD_LEXICAL)
        if version not in READABLE_VERSIONS:
            raise ValueError(f"index format_version {version!r} is not supported (this "
                             f"mimicsearch reads {FORMAT_VERSION}); rebuild with `build-index`")
        try:
            m = cls(
                model_fingerprint=str(d["model_fingerprint"]),
                model_dir=str(d["model_dir"]),
                dimension=int(d["dimension"]),
                index_key=str(d["index_key"]),
                family=_family(d["family"]),
                trained=FileRef.from_dict(d["trained"]),
                shards=tuple(IndexShard.from_dict(s) for s in d["shards"]),
                store_parts=tuple(StorePart.from_dict(p) for p in d["store_parts"]),
                rows=int(d["rows"]),
                build=BuildParams.from_dict(d["build"]),
                id_type=str(d.get("id_type", "int64")),
                deleted=FileRef.from_dict(d["deleted"]) if d.get("deleted") else None,
                deleted_rows=int(d.get("deleted_rows", 0)),
                removed_natively=int(d.get("removed_natively", 0)),
                search_params={str(k): int(v)
                               for k, v in dict(d.get("search_params") or {}).items()},
                quality=Quality.from_dict(d["quality"]) if d.get("quality") else None,
                metric=str(d.get("metric", "inner_product")),
                encode=dict(d.get("encode") or {}),
                lexical=LexicalPart.from_dict(d["lexical"]) if d.get("lexical") else None,
                patients=FileRef.from_dict(d["patients"]) if d.get("patients") else None,
                calibration=(Calibration.from_dict(d["calibration"]) if d.get("calibration")
                             else None),
                diagnoses=FileRef.from_dict(d["diagnoses"]) if d.get("diagnoses") else None,
                schema=NoteSchema.from_dict(d["schema"]) if d.get("schema") else None,
            )
        except KeyError as e:
            raise ValueError(f"index manifest is missing the field {e.args[0]!r}") from None
        m.validate()
        return m

    def validate(self) -> None:
        if self.dimension <= 0:
            raise ValueError(f"dimension={self.dimension}: must be positive")
        if self.id_type not in ("int64", "string"):
            raise ValueError(f"id_type {self.id_type!r}; valid: ['int64', 'string']")
        if self.metric != "inner_product":
            raise ValueError(f"metric {self.metric!r}; valid: ['inner_product']")
        stored = sum(p.rows for p in self.store_parts)
        if stored != self.rows:
            raise ValueError(f"rows={self.rows} but the store parts hold {stored}")
        if not 0 <= self.deleted_rows <= self.rows:
            raise ValueError(f"deleted_rows={self.deleted_rows} outside 0..{self.rows}")
        if self.ntotal != self.rows - self.removed_natively:
            raise ValueError(f"shards hold {self.ntotal} vectors but rows - removed_natively "
                             f"= {self.rows - self.removed_natively}")
        for a, b in zip(self.shards, self.shards[1:]):
            if b.first_row < a.end_row:
                raise ValueError(f"shards {a.index.file} and {b.index.file} overlap in rows")
        segments = self.lexical.segments if self.lexical else ()
        for a, b in itertools.pairwise(segments):
            if b.first_row < a.end_row:
                raise ValueError(f"lexical segments {a.files['rows'].file} and "
                                 f"{b.files['rows'].file} overlap in rows")
        if segments and segments[-1].end_row > self.rows:
            raise ValueError(f"a lexical segment ends at row {segments[-1].end_row}, past "
                             f"the {self.rows} stored rows")

    def save(self, index_dir: str | Path) -> None:
        write_json(Path(index_dir) / MANIFEST, self.to_dict())

    @classmethod
    def load(cls, index_dir: str | Path) -> IndexManifest:
        return read_manifest(index_dir, cls.from_dict, "mimicsearch build-index",
                             lambda m: [ref.file for ref in m.files()])


def check_model(manifest: IndexManifest, fingerprint: str, model_dir: str | Path) -> None:
    """Refuse vectors of another model: they live in another space and would give
    plausible-looking nonsense."""
    if fingerprint != manifest.model_fingerprint:
        raise ValueError(
            f"model {model_dir} (fingerprint {fingerprint}) is not the model this index was "
            f"built with (fingerprint {manifest.model_fingerprint}, from {manifest.model_dir}); "
            "pass that model with --model, or rebuild the index with this one")


def _family(value: str) -> Family:
    try:
        return Family(value)
    except ValueError:
        raise ValueError(f"unknown index family {value!r}; valid: "
                         f"{[f.value for f in Family]}") from None
