"""Temporal note pairs: (a patient's note t, the same patient's note t+1), split by patient.

The training signal of the seed: a note should be closest to the note that follows it. Pairs,
the cleaned notes, their admissions' diagnoses and the patient split are written as Parquet with a
manifest, so a training or evaluation run names exactly the data it saw.

Notes are read by the runtime's reader (`mimicsearch.readers`, `mimicsearch.schema`), so
training and indexing agree on what a note, a patient and a time are in every layout
(MIMIC-III, MIMIC-IV-Note's several files, OMOP NOTE, `--columns`). The tables keep their
historical column names whatever the layout: row_id is the note id, subject_id the patient,
hadm_id the admission or visit.
"""
from __future__ import annotations

import enum
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mimicsearch.diagnoses import read_codes
from mimicsearch.fileio import (
    MANIFEST,
    atomic_path,
    check_kind,
    read_json,
    safe_child,
    sha256_file,
    write_json,
)
from mimicsearch.icd import chapters
from mimicsearch.readers import as_inputs, open_notes
from mimicsearch.schema import CUSTOM, NoteSchema

FORMAT_VERSION = 1
KIND = "mimicsearch-pairs"
ROLES = ("id", "subject", "admission", "category", "time", "exact_time", "error", "sequence")
DIAGNOSES_BESIDE = ("DIAGNOSES_ICD.csv", "DIAGNOSES_ICD.csv.gz", "diagnoses_icd.csv.gz",
                    "diagnoses_icd.csv")


class Split(str, enum.Enum):
    TRAIN = "train"
    VAL = "val"
    TEST = "test"


@dataclass(frozen=True)
class PairOptions:
    """How notes become pairs; recorded in the manifest so a data dir can be rebuilt."""

    min_chars: int = 50              # notes of at most this many characters are dropped
    within_admission: bool = False   # pair only consecutive notes of the same admission
    categories: tuple[str, ...] = ()  # keep only these note categories (empty: all)
    val_fraction: float = 0.1        # of patients
    test_fraction: float = 0.1       # of patients
    seed: int = 0                    # patient split

    def __post_init__(self):
        if self.min_chars < 0:
            raise ValueError(f"min_chars must be >= 0, got {self.min_chars}")
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(f"val_fraction + test_fraction must be < 1, got "
                             f"{self.val_fraction} + {self.test_fraction}")

    def to_dict(self) -> dict:
        return {**asdict(self), "categories": list(self.categories)}

    @classmethod
    def from_dict(cls, d: dict) -> PairOptions:
        return cls(min_chars=int(d["min_chars"]), within_admission=bool(d["within_admission"]),
                   categories=tuple(d["categories"]), val_fraction=float(d["val_fraction"]),
                   test_fraction=float(d["test_fraction"]), seed=int(d["seed"]))


@dataclass(frozen=True)
class PairsManifest:
    """What a pairs directory holds: options, input and output hashes, counts per split."""

    options: PairOptions
    sources: dict[str, str]             # input file name -> sha256
    files: dict[str, str]               # output file name -> sha256
    counts: dict[str, dict[str, int]]   # split -> {"patients", "notes", "pairs"}
    # The notes' roles (None: written before they were recorded, MIMIC-III) and the input
    # rows the reader rejected (no text, bad id, duplicate id: dropped, like short notes).
    schema: NoteSchema | None = None
    rejected: int = 0
    kind: str = KIND
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict:
        return {"kind": self.kind, "format_version": self.format_version,
                "options": self.options.to_dict(),
                "sources": dict(self.sources), "files": dict(self.files),
                "counts": {k: dict(v) for k, v in self.counts.items()},
                "schema": self.schema.to_dict() if self.schema else None,
                "rejected": self.rejected}

    @classmethod
    def from_dict(cls, d: dict) -> PairsManifest:
        check_kind(d, KIND, "mimicsearch pairs")
        if d.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"pairs manifest format_version {d.get('format_version')!r} is not "
                             f"supported (expected {FORMAT_VERSION}); rebuild it with "
                             "mimicsearch pairs")
        counts = {str(k): {str(n): int(c) for n, c in v.items()} for k, v in d["counts"].items()}
        unknown = set(counts) - {s.value for s in Split}
        if unknown:
            raise ValueError(f"pairs manifest: unknown splits {sorted(unknown)}; "
                             f"valid: {[s.value for s in Split]}")
        return cls(options=PairOptions.from_dict(d["options"]),
                   sources={str(k): str(v) for k, v in d["sources"].items()},
                   files={str(k): str(v) for k, v in d["files"].items()}, counts=counts,
                   schema=NoteSchema.from_dict(d["schema"]) if d.get("schema") else None,
                   rejected=int(d.get("rejected", 0)))

    def save(self, data_dir: str | os.PathLike) -> None:
        write_json(Path(data_dir) / MANIFEST, self.to_dict())

    @classmethod
    def load(cls, data_dir: str | os.PathLike) -> PairsManifest:
        path = Path(data_dir) / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"missing {path}: not a pairs directory "
                                    "(create one with: mimicsearch pairs NOTES... --out DIR)")
        return cls.from_dict(read_json(path))


def read_notes(paths, columns: str | None = None) -> tuple[pd.DataFrame, NoteSchema, int]:
    """Note files (one, or several read as one) as a frame with one column per role (id,
    subject, admission, category, time, exact_time, error, sequence, text; None where the
    table has no such column) and `order`, the input order; the schema; the rows the
    reader rejected. Times are timestamps; a known layout's patient must be an integer."""
    inputs = as_inputs(paths)
    reader = open_notes(inputs if len(inputs) > 1 else inputs[0], columns=columns)
    schema = reader.columns.schema
    role_col = {r: schema.column(r) for r in ROLES}
    data: dict[str, list] = {r: [] for r in ROLES}
    data["text"], lines, rejected = [], [], 0
    for batch in reader:
        rejected += len(batch.rejects)
        data["id"] += batch.ids
        data["text"] += batch.texts
        lines += batch.lines.tolist()
        for r in ROLES[1:]:
            col = role_col[r]
            data[r] += batch.metadata[col] if col in batch.metadata else [None] * len(batch.ids)
    df = pd.DataFrame(data)
    df["order"] = np.arange(len(df))
    where = reader.path
    if schema.layout != CUSTOM:
        df["subject"] = _to_int(df["subject"], where, role_col["subject"], df, lines,
                                required=True)
    df["subject"] = _typed(df["subject"])
    df["admission"] = _typed(df["admission"])
    df["error"] = pd.to_numeric(df["error"], errors="coerce")
    df["sequence"] = pd.to_numeric(df["sequence"], errors="coerce")
    for r in ("time", "exact_time"):
        df[r] = _to_time(df[r], where, role_col[r], df, lines)
    df["category"] = df["category"].fillna("").astype(str).str.strip()
    return df, schema, rejected


def read_diagnoses(path: str | os.PathLike) -> pd.DataFrame:
    """A diagnoses file (MIMIC-III DIAGNOSES_ICD or MIMIC-IV diagnoses_icd, see
    `mimicsearch.diagnoses`) as subject_id, hadm_id, seq_num (1 = primary), icd_code,
    icd_version; blank codes dropped."""
    t = read_codes(path).to_pandas()
    df = pd.DataFrame({"subject_id": _typed(t["subject"]), "hadm_id": _typed(t["admission"]),
                       "seq_num": pd.to_numeric(t["seq_num"], errors="coerce"),
                       "icd_code": t["icd_code"].astype(str),
                       "icd_version": t["icd_version"].astype("int64")})
    return df[df["icd_code"] != ""].reset_index(drop=True)


def clean_notes(notes: pd.DataFrame, options: PairOptions,
                schema: NoteSchema | None = None) -> pd.DataFrame:
    """Drop erroneous, short and filtered-out notes and addenda (`schema.addenda`: they
    amend the note before them, which is not their "next note"); order each patient's notes
    in time: the exact time where a note has one, else the start of its date, then its
    sequence (MIMIC-IV's note_seq), then the id where ids are integers, else input order.
    """
    keep = (notes["error"].fillna(0) != 1) & (notes["text"].str.strip().str.len()
                                               > options.min_chars)
    keep &= notes["subject"].notna()
    if schema is not None and schema.addenda:
        keep &= ~notes["category"].str.upper().isin([a.upper() for a in schema.addenda])
    if options.categories:
        present = set(notes["category"])
        wanted = {c.strip().lower() for c in options.categories}
        known = {c.lower() for c in present}
        missing = sorted(wanted - known)
        if missing:
            raise ValueError(f"unknown note categories {missing}; categories in the data: "
                             f"{sorted(present)}")
        keep &= notes["category"].str.lower().isin(wanted)
    if options.within_admission:
        keep &= notes["admission"].notna()
    df = notes[keep].copy()
    df["_time"] = df["exact_time"].fillna(df["time"])
    last = "id" if pd.api.types.is_integer_dtype(df["id"]) else "order"
    df = df.sort_values(["subject", "_time", "sequence", last], kind="stable",
                        na_position="last")
    return df.drop(columns="_time").reset_index(drop=True)


def split_patients(subject_ids, options: PairOptions) -> pd.DataFrame:
    """Seeded patient-level split: every note and pair of a patient lands in one split."""
    ids = np.array(sorted(set(subject_ids)))
    order = np.random.default_rng(options.seed).permutation(len(ids))
    n_test = _split_size(len(ids), options.test_fraction)
    n_val = _split_size(len(ids), options.val_fraction)
    split = np.full(len(ids), Split.TRAIN.value, dtype=object)
    split[order[:n_test]] = Split.TEST.value
    split[order[n_test:n_test + n_val]] = Split.VAL.value
    return pd.DataFrame({"subject_id": ids, "split": split})


def build_pairs(notes: pd.DataFrame, diagnoses: pd.DataFrame | None,
                options: PairOptions) -> pd.DataFrame:
    """Consecutive notes of cleaned, ordered `notes` (same patient, and same admission if asked),
    with the diagnosis chapters of the anchor's admission."""
    group = ["subject", "admission"] if options.within_admission else ["subject"]
    nxt = notes.groupby(group, sort=False, dropna=False).shift(-1)
    has_next = nxt["id"].notna()
    a, p = notes[has_next], nxt[has_next]
    admission_chapters = _admission_chapters(diagnoses)
    return pd.DataFrame({
        "subject_id": a["subject"].to_numpy(),
        "anchor_row_id": a["id"].to_numpy(),
        "positive_row_id": p["id"].astype(a["id"].dtype).to_numpy(),
        "anchor_hadm_id": a["admission"].to_numpy(),
        "anchor_category": a["category"].to_numpy(),
        "positive_category": p["category"].to_numpy(),
        "anchor_text": a["text"].to_numpy(),
        "positive_text": p["text"].to_numpy(),
        "chapters": [admission_chapters.get(h, []) if pd.notna(h) else []
                     for h in a["admission"]],
    })


def diagnoses_beside(notes_file: Path) -> Path | None:
    """The diagnoses file MIMIC ships beside a notes file, if there is one."""
    return next((notes_file.parent / n for n in DIAGNOSES_BESIDE
                 if (notes_file.parent / n).is_file()), None)


def make_pairs(notes_files, out_dir: str | os.PathLike,
               diagnoses_csv: str | os.PathLike | None = None,
               options: PairOptions = PairOptions(),
               columns: str | None = None) -> PairsManifest:
    """Note files (NOTEEVENTS.csv; MIMIC-IV-Note's discharge.csv.gz and radiology.csv.gz;
    OMOP NOTE; any table with `columns` roles) + diagnoses (by default the file MIMIC ships
    beside the first) -> a pairs directory: notes.parquet, pairs.parquet,
    diagnoses.parquet, splits.parquet, manifest.json."""
    files = [Path(f) for f in as_inputs(notes_files)]
    if diagnoses_csv is None:
        diagnoses_csv = diagnoses_beside(files[0])
    out = Path(out_dir)

    raw, schema, rejected = read_notes(files, columns)
    if schema.subject is None:
        raise ValueError(f"{' + '.join(map(str, files))}: no patient column (role subject: "
                         "SUBJECT_ID, subject_id, person_id); pairs need one: name it with "
                         "--columns subject=COLUMN")
    diagnoses = read_diagnoses(diagnoses_csv) if diagnoses_csv else None
    notes = clean_notes(raw, options, schema)
    if notes.empty:
        raise ValueError(f"{' + '.join(map(str, files))}: no notes left after filtering "
                         f"(errors, addenda, length > {options.min_chars} chars, categories "
                         f"{list(options.categories)})")
    out.mkdir(parents=True, exist_ok=True)
    splits = split_patients(notes["subject"], options)
    split_of = dict(zip(splits["subject_id"], splits["split"]))

    pairs = build_pairs(notes, diagnoses, options)
    pairs.insert(0, "split", pairs["subject_id"].map(split_of))
    note_table = pd.DataFrame({
        "row_id": notes["id"], "subject_id": notes["subject"],
        "hadm_id": notes["admission"], "chartdate": notes["time"],
        "charttime": notes["exact_time"], "category": notes["category"], "text": notes["text"],
    })
    note_table.insert(0, "split", note_table["subject_id"].map(split_of))
    if diagnoses is None:
        diag_table = pd.DataFrame({"subject_id": pd.Series([], dtype="int64"),
                                   "hadm_id": pd.Series([], dtype="int64"),
                                   "seq_num": pd.Series([], dtype="float64"),
                                   "icd_code": pd.Series([], dtype=object),
                                   "icd_version": pd.Series([], dtype="int64")})
    else:
        used = set(note_table["hadm_id"].dropna())
        diag_table = diagnoses[diagnoses["hadm_id"].isin(used)].reset_index(drop=True)
        diag_table["seq_num"] = diag_table["seq_num"].astype(float)

    tables = {"notes.parquet": note_table, "pairs.parquet": pairs,
              "diagnoses.parquet": diag_table, "splits.parquet": splits}
    hashes = {}
    for name, table in tables.items():
        with atomic_path(out / name) as tmp:
            table.to_parquet(tmp, index=False)
        hashes[name] = sha256_file(out / name)
    sources = {f.name: sha256_file(f) for f in files}
    if diagnoses_csv:
        sources[Path(diagnoses_csv).name] = sha256_file(diagnoses_csv)
    counts = {s.value: {"patients": int((splits["split"] == s.value).sum()),
                        "notes": int((note_table["split"] == s.value).sum()),
                        "pairs": int((pairs["split"] == s.value).sum())} for s in Split}
    manifest = PairsManifest(options=options, sources=sources, files=hashes, counts=counts,
                             schema=schema, rejected=rejected)
    manifest.save(out)
    return manifest


def load_table(data_dir: str | os.PathLike, name: str, split: Split | str | None = None,
               verify: bool = True) -> pd.DataFrame:
    """One table of a pairs directory ('pairs', 'notes', 'diagnoses', 'splits'), optionally one
    split only, checked against the manifest hash."""
    manifest = PairsManifest.load(data_dir)
    file = f"{name}.parquet"
    if file not in manifest.files:
        raise ValueError(f"unknown table {name!r}; valid: "
                         f"{sorted(f.removesuffix('.parquet') for f in manifest.files)}")
    path = safe_child(data_dir, file)
    if not path.is_file():
        raise FileNotFoundError(f"missing {path} (listed in {Path(data_dir) / MANIFEST})")
    if verify and sha256_file(path) != manifest.files[file]:
        raise ValueError(f"{path}: sha256 differs from {MANIFEST}; the data changed after "
                         "`mimicsearch pairs` wrote it: rebuild the directory")
    df = pd.read_parquet(path)
    if split is not None:
        split = Split(split).value
        df = df[df["subject_id"].isin(_split_subjects(data_dir, split))
                if "split" not in df.columns else df["split"] == split]
    return df.reset_index(drop=True)


def _split_subjects(data_dir, split: str) -> set[int]:
    s = pd.read_parquet(safe_child(data_dir, "splits.parquet"))
    return set(s.loc[s["split"] == split, "subject_id"])


def codes(diagnoses: pd.DataFrame) -> pd.DataFrame:
    """A pairs directory's diagnoses with icd_code and icd_version (a directory written
    before ICD-10 holds icd9_code only)."""
    if "icd_code" in diagnoses.columns:
        return diagnoses
    return diagnoses.assign(icd_code=diagnoses["icd9_code"], icd_version=9)


def _admission_chapters(diagnoses: pd.DataFrame | None) -> dict:
    if diagnoses is None or diagnoses.empty:
        return {}
    d = codes(diagnoses)
    return {h: chapters(g["icd_code"], g["icd_version"]) for h, g in d.groupby("hadm_id")}


def _split_size(n: int, fraction: float) -> int:
    if fraction <= 0:
        return 0
    return max(1, round(n * fraction)) if n >= 3 else 0


def _typed(s: pd.Series) -> pd.Series:
    """Integers where every present value is one (MIMIC's and OMOP's ids), else text."""
    present = s.dropna()
    n = pd.to_numeric(present, errors="coerce")
    if len(present) and n.notna().all() and (n == n.round()).all():
        return pd.to_numeric(s, errors="coerce").astype("Int64")
    return s.astype(object).where(s.notna(), None)


def _to_int(s: pd.Series, where, col, df, lines, required: bool) -> pd.Series:
    n = pd.to_numeric(s, errors="coerce")
    bad = (n.isna() & s.notna()) | (n.notna() & (n != n.round()))
    if required:
        bad |= s.isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(f"{where}: line {lines[i]} (id {df['id'].iloc[i]}): {col} is not an "
                         f"integer: {s.iloc[i]!r}")
    return n.astype("Int64")


def _to_time(s: pd.Series, where, col, df, lines) -> pd.Series:
    t = pd.to_datetime(s, errors="coerce", format="mixed")
    bad = t.isna() & s.notna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(f"{where}: line {lines[i]} (id {df['id'].iloc[i]}): {col} is not a "
                         f"date/time: {s.iloc[i]!r}")
    return t
