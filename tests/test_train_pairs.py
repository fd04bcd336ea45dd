"""Temporal pairs from hand-made MIMIC-shaped CSVs: order, filters, missing times, splits."""
import csv

import pandas as pd
import pytest
from mimicsearch.icd import CHAPTERS, chapter, chapters
from mimicsearch.train.pairs import (
    PairOptions,
    PairsManifest,
    clean_notes,
    load_table,
    make_pairs,
    read_notes,
)

LONG = "x" * 60  # longer than the 50-character floor


def _text(tag: str) -> str:
    return f'{tag} said "stable",\nthen a second line; {LONG}'


def _write_notes(path, rows):
    cols = ["ROW_ID", "SUBJECT_ID", "HADM_ID", "CHARTDATE", "CHARTTIME", "STORETIME",
            "CATEGORY", "DESCRIPTION", "CGID", "ISERROR", "TEXT"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_MINIMAL)
        w.writerow(cols)
        for r in rows:
            w.writerow([r.get(c, "") for c in cols])


@pytest.fixture
def mimic(tmp_path):
    n = lambda row, subj, hadm, date, time, cat, tag, err="": {
        "ROW_ID": row, "SUBJECT_ID": subj, "HADM_ID": hadm, "CHARTDATE": date, "CHARTTIME": time,
        "CATEGORY": cat, "ISERROR": err, "TEXT": _text(tag)}
    rows = [
        # patient 1, written out of order; a missing time sorts as the start of its day
        n(13, 1, 100, "2150-01-02", "2150-01-02 08:00:00", "Nursing", "p1-d2-0800"),
        n(11, 1, 100, "2150-01-01", "2150-01-01 10:00:00", "Radiology ", "p1-d1-1000"),
        n(12, 1, 100, "2150-01-02", "", "Discharge summary", "p1-d2-notime"),
        n(10, 1, 100, "2150-01-01", "2150-01-01 10:00:00", "Nursing", "p1-d1-1000-tie"),
        n(14, 1, 200, "2150-03-01", "2150-03-01 09:00:00", "Nursing", "p1-adm2"),
        n(15, 1, 200, "2150-03-02", "2150-03-02 09:00:00", "Nursing", "p1-error", err="1"),
        {"ROW_ID": 16, "SUBJECT_ID": 1, "HADM_ID": 200, "CHARTDATE": "2150-03-03",
         "CATEGORY": "Nursing", "TEXT": "too short"},
        # patient 2: one outpatient note without admission
        n(20, 2, "", "2151-05-01", "", "ECG", "p2-ecg"),
        n(21, 2, 300, "2151-05-02", "2151-05-02 11:00:00", "Nursing", "p2-a"),
        n(22, 2, 300, "2151-05-03", "2151-05-03 11:00:00", "Nursing", "p2-b"),
    ] + [n(100 + i, 10 + i // 3, 1000 + i // 3, "2152-01-01", f"2152-01-01 0{i % 3}:00:00",
           "Nursing", f"p{10 + i // 3}-{i % 3}") for i in range(30)]
    _write_notes(tmp_path / "NOTEEVENTS.csv", rows)
    with open(tmp_path / "DIAGNOSES_ICD.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"])
        for i, (s, h, c) in enumerate([(1, 100, "4019"), (1, 100, "41401"), (1, 100, "V4581"),
                                       (1, 200, "E8798"), (2, 300, "486")]):
            w.writerow([i, s, h, i, c])
    return tmp_path


def _tags(texts):
    return [t.split(" said")[0] for t in texts]


def test_clean_notes_orders_by_date_time_row_id_and_filters(mimic):
    raw, schema, rejected = read_notes(mimic / "NOTEEVENTS.csv")
    assert schema.layout == "mimic-iii" and rejected == 0
    notes = clean_notes(raw, PairOptions(), schema)
    p1 = notes[notes["subject"] == 1]
    assert _tags(p1["text"]) == ["p1-d1-1000-tie", "p1-d1-1000", "p1-d2-notime", "p1-d2-0800",
                                 "p1-adm2"]
    assert 15 not in set(notes["id"]) and 16 not in set(notes["id"])
    assert "Radiology" in set(p1["category"])  # trailing space stripped
    assert p1["text"].iloc[0].startswith('p1-d1-1000-tie said "stable",\nthen')


def test_pairs_are_consecutive_notes_of_one_patient(mimic, tmp_path):
    make_pairs(mimic / "NOTEEVENTS.csv", tmp_path / "out", options=PairOptions(seed=1))
    pairs = load_table(tmp_path / "out", "pairs")
    p1 = pairs[pairs["subject_id"] == 1]
    assert list(zip(p1["anchor_row_id"], p1["positive_row_id"])) == [
        (10, 11), (11, 12), (12, 13), (13, 14)]
    assert (pairs.groupby("subject_id").size() == [4, 2] + [2] * 10).all()
    # chapters of the anchor's admission: 4019/41401 circulatory, V4581 supplementary V
    assert list(p1["chapters"].iloc[0]) == ["390-459", "V"]
    assert list(p1["chapters"].iloc[3]) == ["390-459", "V"]  # anchor 13 is in admission 100
    p2 = pairs[pairs["subject_id"] == 2]
    assert list(p2["chapters"].iloc[0]) == []  # outpatient anchor: no admission
    assert list(p2["chapters"].iloc[1]) == ["460-519"]


def test_within_admission_and_category_filters(mimic, tmp_path):
    make_pairs(mimic / "NOTEEVENTS.csv", tmp_path / "a",
               options=PairOptions(within_admission=True))
    pairs = load_table(tmp_path / "a", "pairs")
    p1 = pairs[pairs["subject_id"] == 1]
    assert list(zip(p1["anchor_row_id"], p1["positive_row_id"])) == [(10, 11), (11, 12), (12, 13)]
    assert list(pairs.loc[pairs["subject_id"] == 2, "anchor_row_id"]) == [21]

    make_pairs(mimic / "NOTEEVENTS.csv", tmp_path / "c",
               options=PairOptions(categories=("nursing",)))
    pairs = load_table(tmp_path / "c", "pairs")
    p1 = pairs[pairs["subject_id"] == 1]
    assert list(zip(p1["anchor_row_id"], p1["positive_row_id"])) == [(10, 13), (13, 14)]
    with pytest.raises(ValueError, match=r"unknown note categories \['nope'\].*Radiology"):
        make_pairs(mimic / "NOTEEVENTS.csv", tmp_path / "d",
                   options=PairOptions(categories=("nope",)))


def test_split_is_by_patient_seeded_and_leak_free(mimic, tmp_path):
    m = make_pairs(mimic / "NOTEEVENTS.csv", tmp_path / "s",
                   options=PairOptions(val_fraction=0.25, test_fraction=0.25, seed=3))
    splits = load_table(tmp_path / "s", "splits")
    assert splits["subject_id"].is_unique and len(splits) == 12
    assert {s: m.counts[s]["patients"] for s in m.counts} == {"train": 6, "val": 3, "test": 3}
    for table in ("pairs", "notes"):
        df = load_table(tmp_path / "s", table)
        assert (df.groupby("subject_id")["split"].nunique() == 1).all()
    test_pairs = load_table(tmp_path / "s", "pairs", split="test")
    assert set(test_pairs["subject_id"]) <= set(splits.loc[splits["split"] == "test",
                                                             "subject_id"])
    again = make_pairs(mimic / "NOTEEVENTS.csv", tmp_path / "s2",
                       options=PairOptions(val_fraction=0.25, test_fraction=0.25, seed=3))
    assert again.files["splits.parquet"] == m.files["splits.parquet"]
    other = make_pairs(mimic / "NOTEEVENTS.csv", tmp_path / "s3",
                       options=PairOptions(val_fraction=0.25, test_fraction=0.25, seed=4))
    assert other.files["splits.parquet"] != m.files["splits.parquet"]


def test_manifest_round_trip_and_hash_check(mimic, tmp_path):
    m = make_pairs(mimic / "NOTEEVENTS.csv", tmp_path / "m",
                   options=PairOptions(categories=("Nursing",), within_admission=True))
    assert PairsManifest.load(tmp_path / "m") == m
    assert set(m.sources) == {"NOTEEVENTS.csv", "DIAGNOSES_ICD.csv"}
    diag = load_table(tmp_path / "m", "diagnoses")
    assert set(diag["icd_code"]) == {"4019", "41401", "V4581", "E8798", "486"}
    assert set(diag["icd_version"]) == {9} and m.schema.layout == "mimic-iii"
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "m" / "pairs.parquet")
    with pytest.raises(ValueError, match="sha256 differs"):
        load_table(tmp_path / "m", "pairs")


def test_bad_row_is_named(tmp_path):
    row = {"ROW_ID": 7, "SUBJECT_ID": "abc", "CHARTDATE": "2150-01-01", "TEXT": LONG}
    _write_notes(tmp_path / "NOTEEVENTS.csv", [row])
    with pytest.raises(ValueError, match=r"line 2 \(id 7\): SUBJECT_ID is not an integer"):
        read_notes(tmp_path / "NOTEEVENTS.csv")


@pytest.mark.parametrize("code,expected", [
    ("0389", "001-139"), ("1749", "140-239"), ("25000", "240-279"), ("2859", "280-289"),
    ("30500", "290-319"), ("3310", "320-389"), ("4019", "390-459"), ("486", "460-519"),
    ("5789", "520-579"), ("5849", "580-629"), ("650", "630-679"), ("7070", "680-709"),
    ("7140", "710-739"), ("7450", "740-759"), ("76519", "760-779"), ("7802", "780-799"),
    ("8600", "800-999"), ("99591", "800-999"), ("E8798", "E"), ("V3001", "V"), ("", None),
    ("000", None), ("NaN", None),
])
def test_icd9_chapter(code, expected):
    assert chapter(code) == expected


def test_icd9_chapters_sorted_distinct():
    assert chapters(["V053", "4019", "41401", "bad", "0389"]) == ["001-139", "390-459", "V"]
    assert len(CHAPTERS) == 19


def test_pairs_on_synthetic_mimic(synth_dir, tmp_path):
    """The synth stage's corpus (MIMIC quirks: ISERROR rows, missing CHARTTIME/HADM_ID,
    categories with trailing spaces) goes through end to end without leakage."""
    m = make_pairs(synth_dir / "NOTEEVENTS.csv", tmp_path / "p", options=PairOptions(seed=0))
    notes, _, _ = read_notes(synth_dir / "NOTEEVENTS.csv")
    kept = load_table(tmp_path / "p", "notes")
    dropped = set(notes["id"]) - set(kept["row_id"])
    raw = notes.set_index("id")
    assert all(raw.at[r, "error"] == 1 or len(raw.at[r, "text"].strip()) <= 50 for r in dropped)
    assert not kept["row_id"].isin(notes.loc[notes["error"] == 1, "id"]).any()
    pairs = load_table(tmp_path / "p", "pairs")
    assert len(pairs) == len(kept) - kept["subject_id"].nunique()
    assert sum(c["patients"] for c in m.counts.values()) == 40
    assert (pairs.groupby("subject_id")["split"].nunique() == 1).all()
    assert all(c["pairs"] > 0 for c in m.counts.values())
    assert pairs["chapters"].map(len).gt(0).mean() > 0.5


def _icd10_boundaries():
    from mimicsearch.icd import ICD10_RANGES

    for low, high, name in ICD10_RANGES:
        yield low + "0", name
        yield high + "9", name
    # just outside a range, where no chapter follows at once
    yield from [("K96", None), ("P97", None), ("T89", None), ("U071", None), ("I", None),
                ("1A0", None), ("", None)]


@pytest.mark.parametrize("code,expected", list(_icd10_boundaries()))
def test_icd10_chapter_at_every_boundary(code, expected):
    assert chapter(code, 10) == expected


def test_icd10_chapters_map_to_the_icd9_scheme():
    from mimicsearch.icd import ICD10_RANGES, parse_version
    from mimicsearch.schema import SchemaError

    assert {name for *_, name in ICD10_RANGES} == set(CHAPTERS)  # every chapter reachable
    assert chapter("D49", 10) == "140-239" and chapter("D50", 10) == "280-289"
    assert chapter("H59", 10) == chapter("H60", 10) == chapter("G00", 10) == "320-389"
    assert chapter("O9A", 10) == "630-679" and chapter("Z99", 10) == "V"
    assert chapters(["I509", "4280", "Z7901"], [10, 9, 10]) == ["390-459", "V"]
    assert parse_version("10.0", "f") == 10 and parse_version(9, "f") == 9
    with pytest.raises(SchemaError, match="f, line 3: icd_version '11'; valid: 9 or 10"):
        parse_version("11", "f, line 3")
    with pytest.raises(ValueError, match="ICD version 11"):
        chapter("I10", 11)
