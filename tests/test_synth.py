"""Synthetic MIMIC-III generator: schema, determinism, realism and MIMIC's quirks."""
import collections
import csv
import itertools
import json
import math
import random
import re
import statistics

import pandas as pd
import pytest
from click.testing import CliRunner

from mimicsearch.cli import main
from mimicsearch.synth import (
    CATEGORY_COUNTS,
    DIAGNOSIS_COLUMNS,
    METAVISION,
    NOTE_COLUMNS,
    generate,
)
from mimicsearch.synth.vocab import ICD9

PLACEHOLDER = re.compile(r"\[\*\*[^\[\]]*\*\*\]")
TOKEN = re.compile(r"[a-z][a-z0-9\-]{2,}")


def _header(path):
    with open(path, newline="", encoding="utf-8") as f:
        return tuple(next(csv.reader(f)))


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def notes(synth_dir):
    return _rows(synth_dir / "NOTEEVENTS.csv")


@pytest.fixture(scope="module")
def diagnoses(synth_dir):
    return _rows(synth_dir / "DIAGNOSES_ICD.csv")


@pytest.fixture(scope="module")
def corpus250(tmp_path_factory):
    """Enough notes (~14k) for category shares to settle near MIMIC's."""
    out = tmp_path_factory.mktemp("synth250")
    summary = generate(250, out, seed=7)
    return summary, _rows(out / "NOTEEVENTS.csv")


def _words(text):
    return len(text.split())


def test_columns_are_mimic_v14(synth_dir):
    assert _header(synth_dir / "NOTEEVENTS.csv") == NOTE_COLUMNS == (
        "ROW_ID", "SUBJECT_ID", "HADM_ID", "CHARTDATE", "CHARTTIME", "STORETIME", "CATEGORY",
        "DESCRIPTION", "CGID", "ISERROR", "TEXT")
    assert _header(synth_dir / "DIAGNOSES_ICD.csv") == DIAGNOSIS_COLUMNS == (
        "ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE")
    assert sorted(p.name for p in synth_dir.iterdir()) == ["DIAGNOSES_ICD.csv", "NOTEEVENTS.csv"]


def test_values_have_mimic_types_and_ranges(notes, diagnoses):
    assert [int(r["ROW_ID"]) for r in notes] == list(range(1, len(notes) + 1))
    for r in notes:
        assert r["SUBJECT_ID"].isdigit()
        assert r["HADM_ID"] == "" or 100000 <= int(r["HADM_ID"]) <= 199999
        assert re.fullmatch(r"21\d\d-\d\d-\d\d", r["CHARTDATE"]), r["CHARTDATE"]
        if r["CHARTTIME"]:
            assert r["CHARTTIME"].startswith(r["CHARTDATE"])
            assert re.fullmatch(r"21\d\d-\d\d-\d\d \d\d:\d\d:\d\d", r["CHARTTIME"])
        assert r["CATEGORY"] in CATEGORY_COUNTS
        assert r["TEXT"].strip()
    by_hadm = collections.defaultdict(list)
    for r in diagnoses:
        assert "." not in r["ICD9_CODE"] and r["ICD9_CODE"] in ICD9, r["ICD9_CODE"]
        by_hadm[r["HADM_ID"]].append(int(r["SEQ_NUM"]))
    assert all(seq == list(range(1, len(seq) + 1)) for seq in by_hadm.values())
    assert {r["HADM_ID"] for r in notes if r["HADM_ID"]} <= set(by_hadm)


def test_diagnoses_span_chapters_including_v_and_e_codes(diagnoses):
    codes = {r["ICD9_CODE"] for r in diagnoses}
    chapters = {c[0] if c[0] in "VE" else int(c[:3]) // 100 for c in codes}
    assert {"V", "E"} <= chapters
    assert len(chapters - {"V", "E"}) >= 6
    per_hadm = collections.Counter(r["HADM_ID"] for r in diagnoses)
    assert statistics.mean(per_hadm.values()) >= 4


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path):
    a, b, c = (generate(6, tmp_path / name, seed=seed) for name, seed in
               (("a", 3), ("b", 3), ("c", 4)))
    for name in ("NOTEEVENTS.csv", "DIAGNOSES_ICD.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "NOTEEVENTS.csv").read_bytes() != (
        tmp_path / "c" / "NOTEEVENTS.csv").read_bytes()
    assert a.to_dict() | {"notes_path": "", "diagnoses_path": ""} == b.to_dict() | {
        "notes_path": "", "diagnoses_path": ""}
    assert c.notes != a.notes or c.notes_by_category != a.notes_by_category


def test_more_patients_extend_the_same_corpus(tmp_path):
    """Patient i's story depends only on the seed and i, so a bigger corpus starts with a
    smaller one byte for byte."""
    generate(3, tmp_path / "small", seed=2)
    generate(5, tmp_path / "big", seed=2)
    for name in ("NOTEEVENTS.csv", "DIAGNOSES_ICD.csv"):
        small = (tmp_path / "small" / name).read_bytes()
        big = (tmp_path / "big" / name).read_bytes()
        assert len(big) > len(small) and big.startswith(small)


def test_generate_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="positive integer, got 0"):
        generate(0, tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        generate(1, tmp_path / "file")


def test_category_proportions_match_mimic(corpus250):
    summary, rows = corpus250
    counted = collections.Counter(r["CATEGORY"] for r in rows)
    assert dict(counted) == {k: v for k, v in summary.notes_by_category.items() if v}
    total = sum(CATEGORY_COUNTS.values())
    for category, mimic in CATEGORY_COUNTS.items():
        expected = mimic / total
        share = counted[category] / len(rows)
        if expected >= 0.01:
            assert abs(share - expected) <= 0.2 * expected + 0.005, (category, share, expected)
        else:
            assert share < 0.01, (category, share)


def test_note_length_by_category(corpus250):
    _, rows = corpus250
    lengths = collections.defaultdict(list)
    for r in rows:
        if r["DESCRIPTION"] != "Addendum":
            lengths[r["CATEGORY"].strip()].append(_words(r["TEXT"]))
    median = {k: statistics.median(v) for k, v in lengths.items()}
    assert 10 <= median["ECG"] <= 60
    for category in ("Radiology", "Nursing/other", "Nursing", "Echo"):
        assert 100 <= median[category] <= 600, (category, median[category])
        assert median[category] >= 4 * median["ECG"]
    assert median["Physician"] >= 500
    assert median["Discharge summary"] >= 1500
    assert median["Discharge summary"] >= 5 * median["Radiology"]


def _rare_token_sets(rows, max_df=0.05):
    """Per note: tokens in at most `max_df` of notes, placeholders removed (they are random)."""
    tokens = [set(TOKEN.findall(PLACEHOLDER.sub(" ", r["TEXT"]).lower())) for r in rows]
    df = collections.Counter(t for s in tokens for t in s)
    limit = max_df * len(rows)
    return [{t for t in s if df[t] <= limit} for s in tokens]


def _jaccard(a, b):
    return len(a & b) / max(1, len(a | b))


def _consecutive_vs_other_patient(rows, match):
    """Jaccard of rare tokens: each patient's consecutive note pairs (a, b), and (a, o) with o a
    note of another patient that `match`es b. Notes are in chart order within a patient."""
    rare = _rare_token_sets(rows)
    rng = random.Random(0)
    by_patient = collections.defaultdict(list)
    for i, r in enumerate(rows):
        by_patient[r["SUBJECT_ID"]].append(i)
    same, other = [], []
    for patient, idx in by_patient.items():
        for a, b in itertools.pairwise(idx):
            candidates = [o for o in match(b) if rows[o]["SUBJECT_ID"] != patient]
            if candidates:
                o = rng.choice(candidates)
                same.append(_jaccard(rare[a], rare[b]))
                other.append(_jaccard(rare[a], rare[o]))
    return same, other


def test_consecutive_notes_share_patient_specific_terms(notes, diagnoses):
    by_category = collections.defaultdict(list)
    for i, r in enumerate(notes):
        by_category[r["CATEGORY"]].append(i)
    same, other = _consecutive_vs_other_patient(notes, lambda b: by_category[notes[b]["CATEGORY"]])
    assert len(same) > 1000
    assert statistics.mean(same) >= 5 * statistics.mean(other)
    wins = sum(s > o for s, o in zip(same, other))
    losses = sum(s < o for s, o in zip(same, other))
    assert wins >= 5 * losses

    # Harder: the other patient's note has the same category and the same primary diagnosis,
    # so what is shared beyond the diagnosis is the patient's own story.
    primary = {r["HADM_ID"]: r["ICD9_CODE"] for r in diagnoses if r["SEQ_NUM"] == "1"}
    by_key = collections.defaultdict(list)
    for i, r in enumerate(notes):
        by_key[r["CATEGORY"], primary.get(r["HADM_ID"])].append(i)
    same, other = _consecutive_vs_other_patient(
        notes, lambda b: by_key[notes[b]["CATEGORY"], primary.get(notes[b]["HADM_ID"])]
        if notes[b]["HADM_ID"] else [])
    assert statistics.mean(same) >= 1.5 * statistics.mean(other)


def test_notes_are_not_copies(notes):
    """Stories recur but wording, subsets and values vary: only terse ECG reads repeat."""
    counts = collections.Counter(r["TEXT"] for r in notes)
    repeated = [r for r in notes if counts[r["TEXT"]] > 1]
    assert {r["CATEGORY"] for r in repeated} <= {"ECG"}
    assert len(repeated) <= 0.05 * len(notes)


def test_style_alone_separates_categories(notes):
    """Nearest centroid over word counts, fit on half the patients, scored on the other half."""
    def vector(text):
        counts = collections.Counter(TOKEN.findall(PLACEHOLDER.sub(" ", text).lower()))
        norm = math.sqrt(sum(v * v for v in counts.values())) or 1.0
        return {k: v / norm for k, v in counts.items()}

    train = collections.defaultdict(collections.Counter)
    test = []
    for r in notes:
        (train[r["CATEGORY"]].update(vector(r["TEXT"])) if int(r["SUBJECT_ID"]) % 2
         else test.append(r))
    centroids = {}
    for category, total in train.items():
        norm = math.sqrt(sum(v * v for v in total.values()))
        centroids[category] = {k: v / norm for k, v in total.items()}
    scored = [r for r in test if r["CATEGORY"] in centroids]
    correct = 0
    for r in scored:
        v = vector(r["TEXT"])
        best = max(centroids, key=lambda c: sum(w * centroids[c].get(k, 0.0) for k, w in v.items()))
        correct += best == r["CATEGORY"]
    assert len(scored) > 500
    assert correct / len(scored) >= 0.9


def test_pandas_and_csv_module_read_the_same_rows(synth_dir, notes, diagnoses):
    frame = pd.read_csv(synth_dir / "NOTEEVENTS.csv", dtype=str, keep_default_na=False)
    assert list(frame.columns) == list(NOTE_COLUMNS)
    assert len(frame) == len(notes)
    assert frame["TEXT"].tolist() == [r["TEXT"] for r in notes]
    assert frame["ROW_ID"].tolist() == [r["ROW_ID"] for r in notes]
    dx = pd.read_csv(synth_dir / "DIAGNOSES_ICD.csv", dtype=str)
    assert len(dx) == len(diagnoses)
    assert dx["ICD9_CODE"].tolist() == [r["ICD9_CODE"] for r in diagnoses]


def test_mimic_quirks_present(synth_dir, notes):
    by_cat = collections.defaultdict(list)
    for r in notes:
        by_cat[r["CATEGORY"]].append(r)
    with_placeholder = sum(bool(PLACEHOLDER.search(r["TEXT"])) for r in notes)
    assert with_placeholder >= 0.5 * len(notes)
    placeholders = {m for r in notes for m in PLACEHOLDER.findall(r["TEXT"])}
    assert "[**Hospital1 18**]" in placeholders
    assert any(p.startswith("[**Last Name (NamePattern1)") for p in placeholders)
    # Dates are shifted into the 2100s (birth dates, like MIMIC's, may fall before 2100).
    birth = re.compile(r"Date of Birth:\s*\[\*\*[^\]]*\*\*\]")
    dates = [p for r in notes for p in PLACEHOLDER.findall(birth.sub("", r["TEXT"]))
             if re.fullmatch(r"\[\*\*\d{4}-\d{1,2}-\d{1,2}\*\*\]", p)]
    assert len(dates) > 1000
    assert all(2100 <= int(p[3:7]) <= 2210 for p in dates)
    assert all(2100 <= int(r["CHARTDATE"][:4]) <= 2210 for r in notes)
    for category in ("Discharge summary", "ECG", "Echo"):
        assert by_cat[category] and all(r["CHARTTIME"] == "" for r in by_cat[category])
    assert all(r["CHARTTIME"] for r in by_cat["Radiology"] + by_cat["Nursing/other"])
    outpatient = [r for r in notes if r["HADM_ID"] == ""]
    assert outpatient and {r["CATEGORY"] for r in outpatient} <= {"ECG", "Radiology"}
    errors = [r for r in notes if r["ISERROR"] == "1"]
    assert errors and all(r["CATEGORY"] in METAVISION for r in errors)
    assert {r["ISERROR"] for r in notes} == {"", "1"}
    assert all(r["CGID"] and r["STORETIME"] for r in notes if r["CATEGORY"] in METAVISION)
    assert all(r["CGID"] == "" for r in notes if r["CATEGORY"] not in METAVISION)
    assert any(c != c.strip() for c in by_cat)
    assert any("\n" in r["TEXT"] and '"' in r["TEXT"] and "," in r["TEXT"] for r in notes)
    raw = (synth_dir / "NOTEEVENTS.csv").read_text(encoding="utf-8")
    assert '""' in raw  # embedded quotes are escaped by doubling
    assert {r["DESCRIPTION"] for r in by_cat["Discharge summary"]} <= {"Report", "Addendum"}


def test_patient_story_carries_across_admissions(notes, diagnoses):
    """Chronic codes repeat across a patient's admissions; later summaries recall earlier ones."""
    hadms = collections.defaultdict(set)
    codes = collections.defaultdict(set)
    for r in diagnoses:
        hadms[r["SUBJECT_ID"]].add(r["HADM_ID"])
        codes[r["HADM_ID"]].add(r["ICD9_CODE"])
    multi = [sorted(h) for h in hadms.values() if len(h) > 1]
    assert multi
    shared = [bool(codes[a] & codes[b]) for h in multi for a, b in itertools.pairwise(h)]
    assert sum(shared) >= 0.7 * len(shared)
    recalled = [r for r in notes if r["CATEGORY"] == "Discharge summary"
                and "recently admitted" in r["TEXT"]]
    assert recalled


def test_cli_synth_writes_files_and_json_summary(tmp_path):
    result = CliRunner().invoke(main, ["synth", "--patients", "3", "--out", str(tmp_path),
                                       "--seed", "5", "--no-progress", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["patients"] == 3 and summary["seed"] == 5
    assert summary["notes"] == len(_rows(tmp_path / "NOTEEVENTS.csv")) > 0
    assert summary["diagnoses"] == len(_rows(tmp_path / "DIAGNOSES_ICD.csv")) > 0
    bad = CliRunner().invoke(main, ["synth", "--patients", "0", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "--patients" in bad.output


def _shingles(texts, n=4):
    out = set()
    for t in texts:
        words = TOKEN.findall(t.lower())
        out |= {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}
    return out


def test_transfer_corpus_is_mimic_shaped_deterministic_and_written_apart(synth_dir, tmp_path):
    from mimicsearch.train.pairs import PairOptions, make_pairs

    from mimicsearch.synth import generate_transfer

    a = generate_transfer(40, tmp_path / "a", seed=3)
    generate_transfer(40, tmp_path / "b", seed=3)
    assert (tmp_path / "a" / "NOTEEVENTS.csv").read_bytes() == \
        (tmp_path / "b" / "NOTEEVENTS.csv").read_bytes()
    assert _header(tmp_path / "a" / "NOTEEVENTS.csv") == NOTE_COLUMNS
    assert _header(tmp_path / "a" / "DIAGNOSES_ICD.csv") == DIAGNOSIS_COLUMNS
    notes = pd.read_csv(tmp_path / "a" / "NOTEEVENTS.csv")
    assert len(notes) == a.notes and notes.SUBJECT_ID.nunique() == 40
    assert (notes.CATEGORY == "Discharge summary").sum() == a.admissions
    # discharge summaries name the admission's diagnoses, as real ones do
    assert notes[notes.CATEGORY == "Discharge summary"].TEXT.str.contains(
        "Discharge Diagnoses").all()
    # its word 4-grams are mostly its own: few appear anywhere in the standard corpus
    standard = pd.read_csv(synth_dir / "NOTEEVENTS.csv", nrows=3000).TEXT
    mine = _shingles(notes.TEXT)
    shared = len(mine & _shingles(standard)) / len(mine)
    assert shared < 0.05, shared
    make_pairs(tmp_path / "a" / "NOTEEVENTS.csv", tmp_path / "pairs",
               options=PairOptions(val_fraction=0.2, test_fraction=0.2, seed=0))
    out = CliRunner().invoke(main, ["synth", "--patients", "3", "--out", str(tmp_path / "c"),
                                    "--style", "transfer", "--no-progress"])
    assert out.exit_code == 0 and "for 3 patients" in out.output


def test_a_leap_day_birth_over_89_shifts_to_a_common_year():
    """Found at 2.1M notes: a patient over 89 born on 29 February crashed the generator."""
    from datetime import date

    from mimicsearch.synth.generator import shift_old_dob

    assert shift_old_dob(date(2096, 2, 29), 93) == date(1799, 2, 28)
    assert shift_old_dob(date(2096, 2, 29), 90) == date(1796, 2, 29)
    assert shift_old_dob(date(2100, 7, 4), 91) == date(1801, 7, 4)
