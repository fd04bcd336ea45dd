"""Patient hits as a researcher reads them (best notes, admissions, dates, categories) and
cohorts: a patient search (or a chosen few of its patients) as a CSV or Parquet table that
records the request, the index's fingerprint and the time. Real faiss and bm25s indexes,
real files, the real CLI."""
from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fixtures.server import mimicsearch
from fixtures.vectors import unit

from mimicsearch import cohort as cohorts
from mimicsearch.filters import Filters
from mimicsearch.fusion import Fusion
from mimicsearch.index import ArraySource, BuildOptions, build_index, remove_from_index
from mimicsearch.search import Searcher

DIM = 16
WORDS = ["heparin", "warfarin", "sepsis", "fracture", "effusion", "stent", "insulin"]


@pytest.fixture
def dated(tmp_path):
    """30 notes of 6 patients over 3 admissions each, dates and categories known; windows
    on every third note (so one note is several rows)."""
    rng = np.random.default_rng(3)
    rows = []
    for n in range(30):
        subject = 200 + n % 6
        text = " ".join(rng.choice(WORDS, size=4)) + f" day {n}"
        for w in range(1 + (n % 3 == 0)):
            rows.append({"id": n, "WINDOW": w, "SUBJECT_ID": subject,
                         "HADM_ID": subject * 10 + n % 3,
                         "CATEGORY": ("Nursing", "Radiology", "Nursing", "ECG")[n % 4],
                         "CHARTDATE": dt.date(2150, 1, 1) + dt.timedelta(days=3 * n),
                         "TEXT": text if w == 0 else None})
    meta = pa.Table.from_pylist(rows)
    x = unit(rng.standard_normal((len(rows), DIM)))
    ix = tmp_path / "ix"
    build_index(ArraySource(x, meta), ix, model_fingerprint="f", progress=False,
                options=BuildOptions(index_key="Flat"))
    return ix, meta.to_pandas()


def notes_of(df: pd.DataFrame, subject, mask=None) -> pd.DataFrame:
    keep = (df.SUBJECT_ID == subject) & (df.WINDOW == 0)
    return df[keep if mask is None else keep & mask]


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_patient_hits_carry_best_notes_admissions_dates_and_categories(dated, mode):
    ix, df = dated
    s = Searcher(ix)
    for filters, mask in ((None, None), (Filters(categories=["Nursing"]),
                                         df.CATEGORY == "Nursing")):
        got = s.similar_patients(subject_id=200, k=5, mode=mode, filters=filters)
        assert got and 200 not in [p.subject for p in got]
        for p in got:
            mine = notes_of(df, p.subject, mask)
            assert p.notes == len(mine)
            assert p.admissions == sorted(set(mine.HADM_ID))
            assert (p.first_date, p.last_date) == (mine.CHARTDATE.min(), mine.CHARTDATE.max())
            counts = mine.CATEGORY.value_counts()
            assert p.categories == sorted(counts.index, key=lambda c: (-counts[c], c))
            ids = [m.id for m in p.matches]
            assert 1 <= len(ids) <= 3 and len(set(ids)) == len(ids)
            assert set(ids) <= set(mine.id) and p.best == p.matches[0]
            assert [m.rank for m in p.matches] == list(range(1, len(ids) + 1))
            assert [m.score for m in p.matches] == sorted((m.score for m in p.matches),
                                                          reverse=True)


def test_cohort_table_selection_files_and_request(dated, tmp_path):
    ix, _ = dated
    s = Searcher(ix)
    fusion = Fusion("weighted", lexical_weight=0.5)
    filters = Filters(categories=["Nursing", "Radiology"])
    patients = s.similar_patients("heparin sepsis", k=4, mode="lexical", filters=filters)
    chosen = [patients[2].subject, patients[0].subject]
    cohort = s.cohort("heparin sepsis", k=4, mode="lexical", filters=filters,
                      select=[str(c) for c in chosen], name="septic")
    assert cohort.column("subject").to_pylist() == [patients[0].subject,
                                                      patients[2].subject]
    assert cohort.column("rank").to_pylist() == [1, 3]
    assert cohort.column("matching_note_ids").to_pylist()[0] == [m.id for m in
                                                                 patients[0].matches]
    assert cohort.column("admissions").to_pylist()[1] == patients[2].admissions
    request = json.loads(cohort.schema.metadata[cohorts.METADATA_KEY])
    assert request["query"] == {"text": "heparin sepsis"} and request["mode"] == "lexical"
    assert request["filters"]["categories"] == ["Nursing", "Radiology"]
    assert request["cohort"] == "septic" and request["index"] == s.fingerprint
    assert request["fusion"] is None and request["k"] == 4
    with pytest.raises(ValueError, match=r"\['999'\] are not among the 4 patients"):
        s.cohort("heparin sepsis", k=4, mode="lexical", select=["999"])

    whole = s.cohort(subject_id=200, k=5, mode="hybrid", fusion=fusion)
    assert json.loads(whole.column("fusion")[0].as_py()) == fusion.to_dict()
    assert whole.column("subject").to_pylist() == [
        p.subject for p in s.similar_patients(subject_id=200, k=5, mode="hybrid",
                                                 fusion=fusion)]
    for fmt in cohorts.FORMATS:
        path = cohorts.write(whole, tmp_path / f"c.{fmt}")
        back = pq.read_table(path) if fmt == "parquet" else pd.read_csv(path)
        if fmt == "parquet":
            assert back.equals(whole)
            assert cohorts.read_request(path) == json.loads(
                whole.schema.metadata[cohorts.METADATA_KEY])
        else:
            assert back.subject.tolist() == whole.column("subject").to_pylist()
            assert back.matching_note_ids.tolist() == [
                ";".join(map(str, ids)) for ids in whole.column("matching_note_ids").to_pylist()]
            assert set(back.exported_at) == {whole.column("exported_at")[0].as_py()}
    with pytest.raises(ValueError, match="ends in .csv or .parquet"):
        cohorts.write(whole, tmp_path / "c.xlsx")

    before = s.fingerprint
    remove_from_index([0], index_dir=ix)
    assert s.fingerprint != before


def test_patients_cli_writes_a_cohort(serve_index, tmp_path):
    """`patients --out` writes what `--json` shows; --select keeps the chosen few; errors
    name the fix."""
    out = mimicsearch("patients", serve_index, "chest pain troponin", "-k", "6", "--json")
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)["patients"]
    assert all(p["matches"] and "first_date" in p for p in shown)
    path = tmp_path / "cohort.parquet"
    out = mimicsearch("patients", serve_index, "chest pain troponin", "-k", "6", "--out", path,
                      "--select", f"{shown[1]['subject']},{shown[4]['subject']}",
                      "--name", "chest")
    assert out.returncode == 0, out.stderr
    assert "wrote 2 patients" in out.stderr
    cohort = pq.read_table(path)
    assert cohort.column("subject").to_pylist() == [shown[1]["subject"],
                                                      shown[4]["subject"]]
    assert cohort.column("cohort").to_pylist() == ["chest", "chest"]
    csv = tmp_path / "all.csv"
    out = mimicsearch("patients", serve_index, "chest pain troponin", "-k", "6", "--out", csv)
    assert out.returncode == 0, out.stderr
    assert pd.read_csv(csv).subject.tolist() == [p["subject"] for p in shown]
    bad = mimicsearch("patients", serve_index, "chest pain", "--select", "1")
    assert bad.returncode == 2 and "add --out" in bad.stderr
    bad = mimicsearch("patients", serve_index, "chest pain", "--out", tmp_path / "c.xlsx")
    assert bad.returncode == 1 and ".csv or .parquet" in bad.stderr
    bad = mimicsearch("patients", serve_index, "chest pain", "-k", "2", "--out", csv,
                      "--select", "123456789")
    assert bad.returncode == 1 and "raise k" in bad.stderr and "Traceback" not in bad.stderr
