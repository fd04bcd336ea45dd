"""Temporal note pairs: (a patient's note t, the same patient's note t+1), split by patient.

The training signal of the seed: a note should be closest to the note that follows it. Pairs,
the cleaned notes, their admissions' diagnoses and the patient split are written as Parquet with a
manifest, so a training or evaluation run names exactly the data it saw.
"""
from __future__ import annotations

import enum
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

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

FORMAT_VERSION = 1
KIND = "mimicsearch-pairs"
NOTE_COLUMNS = ("ROW_ID", "SUBJECT_ID", "HADM_ID", "CHARTDATE", "CHARTTIME", "CATEGORY",
                "ISERROR", "TEXT")
DIAGNOSIS_COLUMNS = ("SUBJECT_ID", "HADM_ID", "ICD9_CODE")


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
    kind: str = KIND
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict:
        return {"kind": self.kind, "format_version": self.format_version,
                "options": self.options.to_dict(),
                "sources": dict(self.sources), "files": dict(self.files),
                "counts": {k: dict(v) for k, v in self.counts.items()}}

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
                   files={str(k): str(v) for k, v in d["files"].items()}, counts=counts)

    def save(self, data_dir: str | os.PathLike) -> None:
        write_json(Path(data_dir) / MANIFEST, self.to_dict())

    @classmethod
    def load(cls, data_dir: str | os.PathLike) -> PairsManifest:
        path = Path(data_dir) / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"missing {path}: not a pairs directory "
                                    "(create one with: mimicsearch pairs NOTEEVENTS.csv --out DIR)")
        return cls.from_dict(read_json(path))


def read_notes(path: str | os.PathLike) -> pd.DataFrame:
    """NOTEEVENTS.csv as typed columns (quoted multi-line TEXT is fine)."""
    df = _read_csv(path, NOTE_COLUMNS)
    for col in ("ROW_ID", "SUBJECT_ID"):
        df[col] = _to_int(df[col], path, col, df, required=True)
    df["HADM_ID"] = _to_int(df["HADM_ID"], path, "HADM_ID", df, required=False)
    df["ISERROR"] = _to_int(df["ISERROR"], path, "ISERROR", df, required=False)
    df["CHARTDATE"] = _to_time(df["CHARTDATE"], path, "CHARTDATE", df, required=True)
    df["CHARTTIME"] = _to_time(df["CHARTTIME"], path, "CHARTTIME", df, required=False)
    df["CATEGORY"] = df["CATEGORY"].fillna("").astype(str).str.strip()
    df["TEXT"] = df["TEXT"].fillna("").astype(str)
    return df


def read_diagnoses(path: str | os.PathLike) -> pd.DataFrame:
    """DIAGNOSES_ICD.csv; SEQ_NUM (1 = primary diagnosis) is kept when present."""
    df = _read_csv(path, DIAGNOSIS_COLUMNS, optional=("SEQ_NUM",))
    if "SEQ_NUM" in df.columns:
        df["SEQ_NUM"] = pd.to_numeric(df["SEQ_NUM"], errors="coerce")
    df["SUBJECT_ID"] = _to_int(df["SUBJECT_ID"], path, "SUBJECT_ID", df, required=True)
    df["HADM_ID"] = _to_int(df["HADM_ID"], path, "HADM_ID", df, required=True)
    df["ICD9_CODE"] = df["ICD9_CODE"].fillna("").astype(str).str.strip()
    return df[df["ICD9_CODE"] != ""].reset_index(drop=True)


def clean_notes(notes: pd.DataFrame, options: PairOptions) -> pd.DataFrame:
    """Drop erroneous, short and filtered-out notes; order each patient's notes in time.

    Order: CHARTDATE, then CHARTTIME (a missing time sorts as the start of its day), then ROW_ID.
    """
    keep = (notes["ISERROR"].fillna(0) != 1) & (notes["TEXT"].str.strip().str.len()
                                                 > options.min_chars)
    if options.categories:
        present = set(notes["CATEGORY"])
        wanted = {c.strip().lower() for c in options.categories}
        known = {c.lower() for c in present}
        missing = sorted(wanted - known)
        if missing:
            raise ValueError(f"unknown note categories {missing}; categories in the data: "
                             f"{sorted(present)}")
        keep &= notes["CATEGORY"].str.lower().isin(wanted)
    if options.within_admission:
        keep &= notes["HADM_ID"].notna()
    df = notes[keep].copy()
    df["_time"] = df["CHARTTIME"].fillna(df["CHARTDATE"])
    df = df.sort_values(["SUBJECT_ID", "CHARTDATE", "_time", "ROW_ID"], kind="stable")
    return df.drop(columns="_time").reset_index(drop=True)


def split_patients(subject_ids, options: PairOptions) -> pd.DataFrame:
    """Seeded patient-level split: every note and pair of a patient lands in one split."""
    ids = np.array(sorted({int(s) for s in subject_ids}), dtype=np.int64)
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
    with the ICD-9 chapters of the anchor's admission."""
    group = ["SUBJECT_ID", "HADM_ID"] if options.within_admission else ["SUBJECT_ID"]
    nxt = notes.groupby(group, sort=False, dropna=False).shift(-1)
    has_next = nxt["ROW_ID"].notna()
    a, p = notes[has_next], nxt[has_next]
    admission_chapters = _admission_chapters(diagnoses)
    return pd.DataFrame({
        "subject_id": a["SUBJECT_ID"].astype("int64").to_numpy(),
        "anchor_row_id": a["ROW_ID"].astype("int64").to_numpy(),
        "positive_row_id": p["ROW_ID"].astype("int64").to_numpy(),
        "anchor_hadm_id": a["HADM_ID"].astype("Int64").to_numpy(),
        "anchor_category": a["CATEGORY"].to_numpy(),
        "positive_category": p["CATEGORY"].to_numpy(),
        "anchor_text": a["TEXT"].to_numpy(),
        "positive_text": p["TEXT"].to_numpy(),
        "chapters": [admission_chapters.get(h, []) if pd.notna(h) else []
                     for h in a["HADM_ID"]],
    })


def make_pairs(notes_csv: str | os.PathLike, out_dir: str | os.PathLike,
               diagnoses_csv: str | os.PathLike | None = None,
               options: PairOptions = PairOptions()) -> PairsManifest:
    """NOTEEVENTS.csv (+ DIAGNOSES_ICD.csv, by default the one beside it) -> a pairs directory:
    notes.parquet, pairs.parquet, diagnoses.parquet, splits.parquet, manifest.json."""
    notes_csv = Path(notes_csv)
    if diagnoses_csv is None and (notes_csv.parent / "DIAGNOSES_ICD.csv").is_file():
        diagnoses_csv = notes_csv.parent / "DIAGNOSES_ICD.csv"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    notes = clean_notes(read_notes(notes_csv), options)
    if notes.empty:
        raise ValueError(f"{notes_csv}: no notes left after filtering (ISERROR, length > "
                         f"{options.min_chars} chars, categories {list(options.categories)})")
    diagnoses = read_diagnoses(diagnoses_csv) if diagnoses_csv else None
    splits = split_patients(notes["SUBJECT_ID"], options)
    split_of = dict(zip(splits["subject_id"], splits["split"]))

    pairs = build_pairs(notes, diagnoses, options)
    pairs.insert(0, "split", pairs["subject_id"].map(split_of))
    note_table = pd.DataFrame({
        "row_id": notes["ROW_ID"].astype("int64"),
        "subject_id": notes["SUBJECT_ID"].astype("int64"),
        "hadm_id": notes["HADM_ID"].astype("Int64"), "chartdate": notes["CHARTDATE"],
        "charttime": notes["CHARTTIME"], "category": notes["CATEGORY"], "text": notes["TEXT"],
    })
    note_table.insert(0, "split", note_table["subject_id"].map(split_of))
    if diagnoses is None:
        diag_table = pd.DataFrame({"subject_id": pd.Series([], dtype="int64"),
                                   "hadm_id": pd.Series([], dtype="int64"),
                                   "seq_num": pd.Series([], dtype="float64"),
                                   "icd9_code": pd.Series([], dtype=object)})
    else:
        used = set(note_table["hadm_id"].dropna())
        d = diagnoses[diagnoses["HADM_ID"].isin(used)]
        diag_table = pd.DataFrame({"subject_id": d["SUBJECT_ID"].astype("int64"),
                                   "hadm_id": d["HADM_ID"].astype("int64"),
                                   "seq_num": d.get("SEQ_NUM", pd.Series(np.nan, index=d.index))
                                   .astype(float),
                                   "icd9_code": d["ICD9_CODE"]}).reset_index(drop=True)

    tables = {"notes.parquet": note_table, "pairs.parquet": pairs,
              "diagnoses.parquet": diag_table, "splits.parquet": splits}
    hashes = {}
    for name, table in tables.items():
        with atomic_path(out / name) as tmp:
            table.to_parquet(tmp, index=False)
        hashes[name] = sha256_file(out / name)
    sources = {notes_csv.name: sha256_file(notes_csv)}
    if diagnoses_csv:
        sources[Path(diagnoses_csv).name] = sha256_file(diagnoses_csv)
    counts = {s.value: {"patients": int((splits["split"] == s.value).sum()),
                        "notes": int((note_table["split"] == s.value).sum()),
                        "pairs": int((pairs["split"] == s.value).sum())} for s in Split}
    manifest = PairsManifest(options=options, sources=sources, files=hashes, counts=counts)
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


def _admission_chapters(diagnoses: pd.DataFrame | None) -> dict[int, list[str]]:
    if diagnoses is None or diagnoses.empty:
        return {}
    return {int(h): chapters(codes) for h, codes in diagnoses.groupby("HADM_ID")["ICD9_CODE"]}


def _split_size(n: int, fraction: float) -> int:
    if fraction <= 0:
        return 0
    return max(1, round(n * fraction)) if n >= 3 else 0


def _read_csv(path, columns, optional=()) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing file: {path}")
    header = pd.read_csv(path, nrows=0).columns
    missing = [c for c in columns if c not in header]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; found {list(header)}")
    columns = [*columns, *(c for c in optional if c in header)]
    return pd.read_csv(path, usecols=columns, dtype=str, keep_default_na=False,
                       na_values=[""])


def _bad_row(path, df, col, mask, what) -> ValueError:
    i = int(np.flatnonzero(mask.to_numpy())[0])
    row_id = df["ROW_ID"].iloc[i] if "ROW_ID" in df.columns else "?"
    return ValueError(f"{path}: record {i + 1} (ROW_ID {row_id}): {col} {what}: "
                      f"{df[col].iloc[i]!r}")


def _to_int(s: pd.Series, path, col, df, required: bool) -> pd.Series:
    n = pd.to_numeric(s, errors="coerce")
    bad = (n.isna() & s.notna()) | (n.notna() & (n != n.round()))
    if required:
        bad |= s.isna()
    if bad.any():
        raise _bad_row(path, df, col, bad, "is not an integer")
    return n.astype("Int64")


def _to_time(s: pd.Series, path, col, df, required: bool) -> pd.Series:
    t = pd.to_datetime(s, errors="coerce", format="mixed")
    bad = t.isna() & s.notna()
    if required:
        bad |= s.isna()
    if bad.any():
        raise _bad_row(path, df, col, bad, "is not a date/time")
    return t
