"""Notes to a searchable index: encode (either engine), then build, extend or sync it.

The one module that joins the encoding pipeline (corpus, spark) to the index package; the
index package itself never encodes. `build-index`, `add` and `sync` are these functions.

One contract for all of them: the notes come first (a notes file, an embeddings directory,
or an in-memory table), directories are keyword-only (`out_dir` for a new one, `index_dir`
for an existing one, then `model_dir`), and each returns an `IndexSummary` whose counts add
up: read = encoded + rejected (+ unchanged, for sync).
"""
from __future__ import annotations

import shutil
import uuid
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from .calibrate import calibrate_index, refresh
from .corpus import BATCH_SIZE, SHARD_SIZE, EncodeSummary, encode_corpus
from .diagnoses import attach, read_chapters
from .embeddings import REJECTS, TEXT_HASH, EmbeddingsManifest, text_hash
from .fileio import atomic_open, mark_new, writer
from .index import (
    BuildOptions,
    EmbeddingsSource,
    IndexManifest,
    MetadataStore,
    apply_changes,
    build_index,
    check_model,
    claim_out_dir,
)
from .model_manifest import ModelManifest
from .options import EncodeOptions
from .readers import IdType, as_inputs, as_table, is_table, open_notes, write_rejects
from .schema import NoteSchema, SchemaError

ENGINES = ("local", "spark")
# Warn when more than this share of the notes was cut at the model's token limit.
TRUNCATION_WARNING = 0.5


class TruncationWarning(UserWarning):
    """Most notes were longer than the model's limit and only their start was embedded."""


@dataclass(frozen=True)
class IndexSummary:
    """What build-index, add or sync did. Notes: read = encoded + rejected + unchanged."""

    command: str
    index_dir: str
    read: int  # input rows (0 when the input was an embeddings directory)
    encoded: int
    rejected: int
    truncated: int
    unchanged: int  # sync: notes already indexed with the same text
    added: int  # notes new to the index
    edited: int  # sync: notes re-encoded because their text changed
    removed: int  # notes removed (sync with remove_missing)
    absent: int  # sync: indexed notes missing from the snapshot (kept unless remove_missing)
    live_notes: int
    rows: int
    shards: int
    rejects_file: str | None  # every rejected row with its line and reason
    warnings: tuple[str, ...] = ()
    # The search setting chosen on the index's own notes, where this run measured it
    # (build-index, calibrate, or add/sync past calibrate.RECALIBRATE_SHARE of changes).
    calibrated: dict | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["warnings"] = list(self.warnings)
        return d


def _spark():
    from . import spark  # the [spark] extra

    return spark


def _check_engine(engine: str, partitions, master, spark) -> None:
    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r}; valid: {list(ENGINES)}")
    if engine == "local" and (master or partitions or spark):
        raise ValueError("--master and partitions need --engine spark")


def encode_notes(notes, *, model_dir: str | Path, out_dir: str | Path,
                 options: EncodeOptions | None = None, engine: str = "local",
                 threads: int | None = None, overwrite: bool = False, progress: bool = True,
                 shard_size: int = SHARD_SIZE, batch_size: int = BATCH_SIZE,
                 show_text: bool = False, npy: bool = False, partitions: int | None = None,
                 master: str | None = None, spark=None) -> EncodeSummary:
    """`encode`: notes (a file, or a table for the local engine) to an embeddings directory
    on `engine`. Only the local engine resumes and takes shard_size, batch_size, show_text
    and npy; only Spark takes partitions and master."""
    _check_engine(engine, partitions, master, spark)
    options = options or EncodeOptions()
    if engine == "spark":
        local_only = [name for name, given in (("--npy", npy), ("--show-text", show_text),
                                               ("--shard-size", shard_size != SHARD_SIZE),
                                               ("--batch-size", batch_size != BATCH_SIZE))
                      if given]
        if local_only:
            raise ValueError(f"{', '.join(local_only)} need --engine local")
        return _spark().encode_corpus_spark(notes, model_dir=model_dir, out_dir=out_dir,
                                            options=options, threads=threads,
                                            partitions=partitions, overwrite=overwrite,
                                            progress=progress, master=master, spark=spark)
    return encode_corpus(notes, model_dir=model_dir, out_dir=out_dir, options=options,
                         threads=threads, shard_size=shard_size, batch_size=batch_size,
                         show_text=show_text, npy=npy, overwrite=overwrite, progress=progress)


def _is_embeddings(notes) -> bool:
    if isinstance(notes, (list, tuple)):
        if len(notes) > 1 and any(not is_table(n) and Path(n).is_dir() for n in notes):
            raise ValueError("give one embeddings directory, or notes files only")
        return False
    return not is_table(notes) and Path(notes).is_dir()


def _single(notes):
    """One input as itself, several (files) as a list."""
    if isinstance(notes, (list, tuple)):
        notes = as_inputs(notes)
        return notes[0] if len(notes) == 1 else notes
    return notes


def embeddings_for(notes, *, model_dir: str | Path | None, embeddings_dir: Path,
                   options: EncodeOptions, engine: str = "local", threads: int | None = None,
                   progress: bool = True, partitions: int | None = None,
                   master: str | None = None, spark=None) -> tuple[Path, EncodeSummary | None]:
    """The embeddings directory for `notes`: itself if it is one (checked against
    `model_dir` when given), else the notes encoded into `embeddings_dir` by `engine`, with
    the encode summary. `embeddings_dir` is the caller's own work directory: a run of the
    same arguments there resumes, a run of other arguments (another input) is replaced."""
    if _is_embeddings(notes):
        m = EmbeddingsManifest.load(notes)  # not one: the reason, naming the file
        if model_dir is not None:
            check_model_dir(m.model_fingerprint, model_dir, Path(notes))
        return Path(notes), None
    if model_dir is None:
        raise ValueError(f"{'the table' if is_table(notes) else notes} holds notes: pass "
                         "--model (model_dir=) to encode them")
    summary = encode_notes(notes, model_dir=model_dir, out_dir=embeddings_dir, options=options,
                           engine=engine, threads=threads, progress=progress,
                           overwrite=True, partitions=partitions, master=master,
                           spark=spark)
    return embeddings_dir, summary


def check_model_dir(fingerprint: str, model_dir: str | Path, encoded: Path) -> None:
    got = ModelManifest.load(model_dir).fingerprint
    if got != fingerprint:
        raise ValueError(f"{encoded} was encoded by model {fingerprint}, not by "
                         f"{model_dir} ({got})")


def _warnings(s: EncodeSummary | None, long: str) -> tuple[str, ...]:
    if s is None or not s.encoded or long != "truncate":
        return ()
    if s.truncated / s.encoded <= TRUNCATION_WARNING:
        return ()
    text = (f"{s.truncated} of {s.encoded} notes were longer than the model's token limit "
            "and only their start was embedded; --long chunk (long='chunk') embeds whole "
            "notes")
    warnings.warn(text, TruncationWarning, stacklevel=4)  # the caller of build/add/sync
    return (text,)


@writer("out_dir")
def build_index_from(notes, *, out_dir: str | Path, model_dir: str | Path | None = None,
                     encode: EncodeOptions | None = None, build: BuildOptions | None = None,
                     engine: str = "local", threads: int | None = None, progress: bool = True,
                     partitions: int | None = None, master: str | None = None,
                     spark=None, calibrate: bool = True,
                     diagnoses: str | Path | None = None) -> IndexSummary:
    """`build-index`: encode notes (a file, several files read as one, or a table) into
    OUT/embeddings, or take an embeddings directory, then build the index over them, both
    on `engine`. The notes' columns get their roles from their layout (`schema.py`) or
    `encode.columns`.

    `encode` says how notes are encoded (columns, metadata to keep, dim, long notes,
    precision); notes get snippets and their whole text for the store unless it
    says otherwise. `build` says
    which index (memory budget, factory key, shards, recall target).
    Rejected rows are listed in OUT/embeddings/rejects.csv. `diagnoses` (a MIMIC
    DIAGNOSES_ICD file) are kept per admission for patient-search calibration; `calibrate`
    chooses the "auto" search setting on the index's own notes (`mimicsearch.calibrate`).
    Raises ValueError (bad input or options), FileExistsError (OUT holds an index),
    DirectoryBusy.
    """
    _check_engine(engine, partitions, master, spark)
    if build and build.merge and build.index_key and "IVF" not in build.index_key.upper():
        raise ValueError(f"only IVF indexes can be merged on disk; --index-key "
                         f"{build.index_key!r} is not one")
    out = Path(out_dir)
    notes = _single(notes)
    claim_out_dir(out)  # before encoding: a finished index is refused at once
    if diagnoses is not None:
        read_chapters(diagnoses)  # a bad file fails now, not after the encoding
    options = encode or EncodeOptions(snippets=True, full_text=True)
    emb, encoded = embeddings_for(notes, model_dir=model_dir, embeddings_dir=out / "embeddings",
                                  options=options, engine=engine, threads=threads,
                                  progress=progress, partitions=partitions, master=master,
                                  spark=spark)
    recorded_model = str(Path(model_dir).resolve()) if model_dir else ""
    if engine == "spark":
        m = _spark().build_index_spark(emb, out_dir=out, model_dir=recorded_model,
                                       options=build, progress=progress,
                                       partitions=partitions, master=master, spark=spark)
    else:
        source = EmbeddingsSource(emb).verify()
        m = build_index(source, out, model_fingerprint=source.manifest.model_fingerprint,
                        model_dir=recorded_model, options=build,
                        encode=source.manifest.encode_options(), progress=progress)
    if diagnoses is not None:
        attach(out, diagnoses)
    record = calibrate_index(out, seed=m.build.seed, progress=progress) if calibrate else None
    notes_in = _live_notes(out, m)
    return IndexSummary(
        "build-index", str(out), *_counts(encoded), unchanged=0, added=notes_in, edited=0,
        removed=0, absent=0, live_notes=notes_in, rows=m.rows, shards=len(m.shards),
        rejects_file=str(emb / REJECTS) if (emb / REJECTS).is_file() else None,
        warnings=_warnings(encoded, options.long), calibrated=_chosen(record))


def _chosen(record) -> dict | None:
    return None if record is None else record.chosen


def _counts(s: EncodeSummary | None) -> tuple[int, int, int, int]:
    return (0, 0, 0, 0) if s is None else (s.read, s.encoded, s.rejected, s.truncated)


def _live_notes(index_dir: Path, m: IndexManifest) -> int:
    return len(MetadataStore.load(index_dir, m, verify=False).ids())


def _index_options(m: IndexManifest, text_col, id_col, input_format,
                   columns: str | None = None) -> EncodeOptions:
    """New notes are encoded as the index's own were; only how they are read may differ
    (`columns` replaces the roles the index was built with)."""
    options = EncodeOptions.from_dict(m.encode) if m.encode else EncodeOptions(dim=m.dimension)
    return options.replace(text_col=text_col, id_col=id_col, input_format=input_format,
                           id_type=m.id_type, columns=columns or options.columns)


def _check_roles(index_dir: Path, m: IndexManifest, schema: NoteSchema | None, notes) -> None:
    """Refuse notes whose roles sit in other columns than the index's (their patients,
    times or categories would be stored where no filter reads them)."""
    if schema is None:
        return
    have = MetadataStore.schema_of(index_dir, m)
    got = schema.roles()
    clash = [f"{r} is {c} in the index, {got[r]} in the notes" for r, c in have.roles().items()
             if r not in ("id", "text") and r in got and got[r] != c]
    if clash:
        raise SchemaError(
            f"{_name(notes)}: its columns play other roles than the index's ("
            + "; ".join(clash) + f"); the index is {have.describe()}: name the notes' "
            "columns as the index does with --columns")


def _keep_rejects(index_dir: Path, command: str, tmp: Path) -> str | None:
    """Copy a temporary run's rejects.csv into the index directory (INDEX/rejects-CMD.csv,
    replaced by the next run of CMD) so the user can read it after the run."""
    src = tmp / REJECTS
    if not src.is_file():
        return None
    dest = index_dir / f"rejects-{command}.csv"
    with atomic_open(dest, "w", encoding="utf-8", newline="") as f:
        f.write(src.read_text(encoding="utf-8"))
    return str(dest)


def _encode_into(tmp: Path, notes, model_dir, options: EncodeOptions, threads, progress
                 ) -> tuple[np.ndarray, pa.Table, EncodeSummary | None, Path]:
    emb, summary = embeddings_for(notes, model_dir=model_dir, embeddings_dir=tmp,
                                  options=options, threads=threads, progress=progress)
    source = EmbeddingsSource(emb).verify()
    vecs, tables = [], []
    for v, t in source.read(0, source.rows):
        vecs.append(v)
        tables.append(t)
    if not vecs:
        return (np.zeros((0, source.dim), np.float32), None, summary, emb)
    return np.concatenate(vecs), pa.concat_tables(tables), summary, emb


@writer("index_dir")
def add_notes(notes, *, index_dir: str | Path, model_dir: str | Path | None = None,
              text_col: str | None = None, id_col: str | None = None,
              input_format: str | None = None, threads: int | None = None,
              progress: bool = True, columns: str | None = None) -> IndexSummary:
    """`add`: encode new notes (a file, several read as one, or a table) as the index's
    own notes were encoded (the options its manifest records; `text_col`/`id_col`/`columns`
    name the new columns, whose roles must be the index's) and append them; an embeddings
    directory is appended as it is, if its model matches.

    Ids already in the index are refused before anything is encoded (use `sync_notes` to
    replace edited notes). Rejected rows are listed in INDEX/rejects-add.csv.
    """
    index_dir = Path(index_dir)
    notes = _single(notes)
    m = IndexManifest.load(index_dir)
    model_dir = model_dir or m.model_dir or None
    options = _index_options(m, text_col, id_col, input_format, columns)
    if is_table(notes):  # read twice below (ids first, then texts): a stream only once
        notes = as_table(notes)
    if not _is_embeddings(notes):
        if model_dir is None:
            raise ValueError(f"{_name(notes)} holds notes and this index records no model: "
                             "pass --model to encode them")
        _refuse_present(index_dir, m, notes, options)
    else:
        _check_roles(index_dir, m, EmbeddingsManifest.load(notes).schema, notes)
    tmp = mark_new(index_dir / f".adding-{uuid.uuid4().hex[:12]}")
    try:
        vecs, table, encoded, emb = _encode_into(
            tmp, notes, None if _is_embeddings(notes) else model_dir, options, threads,
            progress)
        check_model(m, EmbeddingsManifest.load(emb).model_fingerprint,
                    notes if _is_embeddings(notes) else model_dir)
        rejects = _keep_rejects(index_dir, "add", emb) if encoded is not None else None
        if table is None:
            raise ValueError(f"{_name(notes)} holds no notes to add"
                             + (f" (all {encoded.rejected} rows rejected: see {rejects})"
                                if encoded and encoded.rejected else ""))
        r = apply_changes(index_dir=index_dir, vectors=vecs, metadata=table)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    record = refresh(index_dir, progress)
    return IndexSummary(
        "add", str(index_dir), *_counts(encoded), unchanged=0, added=r.added_notes, edited=0,
        removed=0, absent=0, live_notes=r.live_notes,
        rows=r.manifest.rows, shards=len(r.manifest.shards), rejects_file=rejects,
        warnings=_warnings(encoded, options.long), calibrated=_chosen(record))


def _columns_of(cols) -> str:
    """A reader's roles as a `--columns` text, to read again a table of its columns."""
    have = {cols.id, cols.text, *cols.keep}
    return ",".join(f"{r}={c}" for r, c in cols.schema.roles().items() if c in have)


def _name(notes) -> str:
    if isinstance(notes, (list, tuple)):
        return " + ".join(map(str, notes))
    return "the table" if is_table(notes) else str(notes)


def _reader(notes, options: EncodeOptions, m: IndexManifest, index_dir: Path):
    reader = open_notes(notes, options.text_col, options.id_col,
                        None if options.keep is None else list(options.keep),
                        IdType.INT if m.id_type == "int64" else IdType.STR,
                        options.input_format, columns=options.columns)
    _check_roles(index_dir, m, reader.columns.schema, notes)
    return reader


def _refuse_present(index_dir: Path, m: IndexManifest, notes, options: EncodeOptions) -> None:
    """Refuse, before encoding, notes whose ids the index already holds."""
    reader = _reader(notes, options, m, index_dir)
    live = set(MetadataStore.load(index_dir, m).ids().to_pylist())
    clash = [i for b in reader for i in b.ids if i in live]
    if clash:
        raise ValueError(f"{len(clash)} notes of {_name(notes)} have ids already in the index "
                         f"(e.g. {clash[:5]}); `sync` replaces edited notes, `remove` "
                         "deletes them")


@writer("index_dir")
def sync_notes(notes, *, index_dir: str | Path, model_dir: str | Path | None = None,
               remove_missing: bool = False, text_col: str | None = None,
               id_col: str | None = None, input_format: str | None = None,
               threads: int | None = None, progress: bool = True,
               columns: str | None = None) -> IndexSummary:
    """`sync`: make the index hold `notes` (a snapshot with an id column: a file, several
    files read as one, or a table). New ids are encoded and added; notes whose text
    changed (by the text hash the index stores per row) are re-encoded and replace their
    old rows; with `remove_missing` ids absent from the snapshot are removed. Unchanged notes are not encoded again.

    All changes land in one commit, so a reader sees the old index or the new one; killed
    anywhere, a re-run completes the same final index, and a re-run after it finished
    changes nothing. Rejected rows are listed in INDEX/rejects-sync.csv.
    """
    index_dir = Path(index_dir)
    notes = _single(notes)
    m = IndexManifest.load(index_dir)
    model_dir = model_dir or m.model_dir or None
    if model_dir is None:
        raise ValueError("this index records no model: pass --model (model_dir=)")
    if _is_embeddings(notes):
        raise ValueError(f"{notes} is an embeddings directory; sync reads notes (a file or "
                         "a table), so it can compare their texts with the index")
    options = _index_options(m, text_col, id_col, input_format, columns)
    store = MetadataStore.load(index_dir, m)
    indexed = store.notes_table(["id", TEXT_HASH])
    stored = dict(zip(indexed.column("id").to_pylist(), indexed.column(TEXT_HASH).to_pylist()))
    reader = _reader(notes, options, m, index_dir)
    if reader.columns.id is None:
        raise ValueError(f"{_name(notes)} has no id column (the layout's ROW_ID or note_id): "
                         "sync matches notes by id; pass --columns id=COLUMN (id_col=)")
    cols = reader.columns
    wanted: dict[str, list] = {c: [] for c in (cols.id, cols.text, *cols.keep)}
    seen, rejects, read, unchanged, edited = set(), [], 0, 0, []
    for batch in reader:
        read += batch.records
        rejects += batch.rejects
        for j, note_id in enumerate(batch.ids):
            seen.add(note_id)
            if note_id in stored and stored[note_id] == text_hash(batch.texts[j]):
                unchanged += 1
                continue
            if note_id in stored:
                edited.append(note_id)
            wanted[cols.id].append(note_id)
            wanted[cols.text].append(batch.texts[j])
            for k in cols.keep:
                wanted[k].append(batch.metadata[k][j])
    absent = [i for i in stored if i not in seen]
    rejects_file = str(index_dir / "rejects-sync.csv")
    write_rejects(rejects_file, rejects)
    table = pa.table({c: pa.array(v, pa.int64() if c == cols.id and m.id_type == "int64"
                                  else pa.string()) for c, v in wanted.items()})
    remove = edited + (absent if remove_missing else [])
    encoded, vecs, meta = None, None, None
    tmp = mark_new(index_dir / f".adding-{uuid.uuid4().hex[:12]}")
    try:
        if table.num_rows:
            vecs, meta, encoded, emb = _encode_into(
                tmp, table, model_dir, options.replace(text_col=cols.text, id_col=cols.id,
                                                       keep=tuple(cols.keep),
                                                       input_format=None,
                                                       columns=_columns_of(cols)),
                threads, progress)
            check_model(m, EmbeddingsManifest.load(emb).model_fingerprint, model_dir)
        r = apply_changes(index_dir=index_dir, vectors=vecs, metadata=meta, remove_ids=remove,
                          missing="ignore")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    record = refresh(index_dir, progress)
    n_enc = 0 if encoded is None else encoded.encoded
    return IndexSummary(
        "sync", str(index_dir), read, n_enc, len(rejects),
        0 if encoded is None else encoded.truncated, unchanged=unchanged,
        added=n_enc - len(edited), edited=len(edited),
        removed=len(absent) if remove_missing else 0,
        absent=0 if remove_missing else len(absent),
        live_notes=r.live_notes, rows=r.manifest.rows,
        shards=len(r.manifest.shards), rejects_file=rejects_file,
        warnings=_warnings(encoded, options.long), calibrated=_chosen(record))
