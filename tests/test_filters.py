"""Typed metadata and filters on any stored column, applied inside faiss: exactly the
brute-force answer on Flat, HNSW and IVF, on both the exact-subset and the selector path."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from fixtures.vectors import unit

from mimicsearch.filters import Filters
from mimicsearch.index import ArraySource, BuildOptions, build_index, loaded, remove_from_index
from mimicsearch.search import Searcher

pytestmark = pytest.mark.usefixtures("faiss_one_thread")

N, DIM, K = 3000, 16, 10
CATEGORIES = ("ECG", "Radiology", "Nursing", "Discharge summary")


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(5)
    x = unit(rng.standard_normal((N, DIM)))
    day0 = dt.date(2150, 1, 1)
    meta = pa.table({
        "id": np.arange(N, dtype=np.int64) + 100,
        # as pandas leaves a nullable integer column after a NaN: floats, one missing
        "SUBJECT_ID": pa.array([None if i == 7 else float(2500 + i // 30) for i in range(N)]),
        "HADM_ID": [str(100000 + i // 6) for i in range(N)],
        "CATEGORY": [CATEGORIES[i % 4] for i in range(N)],
        "CHARTDATE": [(day0 + dt.timedelta(days=i % 365)).isoformat() for i in range(N)],
        "DESCRIPTION": [("Report", "Addendum", None)[i % 3] for i in range(N)],
        "ICD9": [("0389", "4019", "V3000")[i % 3] for i in range(N)],  # codes stay text
        "TEXT": [f"note {i}" for i in range(N)],
    })
    return x, meta


@pytest.fixture(scope="module", params=["Flat", "HNSW32,Flat", "IVF16,Flat"])
def index_dir(request, corpus, tmp_path_factory):
    x, meta = corpus
    out = tmp_path_factory.mktemp("filters") / "ix"
    build_index(ArraySource(x, meta), out, model_fingerprint="fp",
                options=BuildOptions(index_key=request.param), progress=False)
    return out


def brute(x, q, allowed, k):
    scores = q @ x.T
    scores[:, ~allowed] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), np.where(
        np.isfinite(np.take_along_axis(scores, order, 1)), order, -1)


def test_metadata_is_typed_and_every_kept_column_is_stored(index_dir):
    store = Searcher(index_dir).index.store
    types = store.metadata_columns
    assert types["SUBJECT_ID"] == pa.int64() and types["HADM_ID"] == pa.int64()
    assert types["CHARTDATE"] == pa.date32() and types["DESCRIPTION"] == pa.string()
    assert types["ICD9"] == pa.string()  # a leading zero: not a number
    rec = store.records([31])[0]
    assert (rec["SUBJECT_ID"], rec["HADM_ID"]) == (2501, 100005)
    assert rec["CHARTDATE"] == dt.date(2150, 2, 1) and rec["ICD9"] == "4019"
    assert store.records([7])[0]["SUBJECT_ID"] is None


CASES = {
    "patient": Filters(subjects=[2510]),
    "patient as text": Filters(subjects=["2510"]),
    "kept column": Filters(where=["DESCRIPTION=Addendum"]),
    "date range": Filters(since="2150-03-01", until=dt.date(2150, 4, 15)),
    "half": Filters(where=["HADM_ID>=100250"]),
    "expression": Filters(where=[pc.field("ICD9") == "V3000"], categories=["ecg", "NURSING"]),
    "everything": Filters(categories=["Radiology"], exclude_subjects=[2501, 2502],
                          since="2150-02-01", where=["DESCRIPTION!=Report", "ICD9=0389,4019"]),
}


@pytest.mark.parametrize("path", ["exact subset", "faiss selector", "over-fetch"])
@pytest.mark.parametrize("case", list(CASES))
def test_filtered_search_is_the_brute_force_answer(index_dir, corpus, case, path,
                                                   monkeypatch):
    x, _meta = corpus
    if path != "exact subset":
        monkeypatch.setattr(loaded, "EXACT_SUBSET_ROWS", 0)
        monkeypatch.setattr(loaded, "OVERFETCH_SHARE", {})
        monkeypatch.setattr(loaded, "OVERFETCH_SHARE_DEFAULT",
                            2.0 if path == "faiss selector" else 0.0)
    s = Searcher(index_dir)
    s.index.set_search_params(s.index.exhaustive_params())
    allowed = s.allowed(CASES[case])
    assert 0 < allowed.sum() < N
    q = unit(np.random.default_rng(9).standard_normal((6, DIM)))
    D, I = s.index.search(q, K, allowed)
    eD, eI = brute(x, q, allowed, K)
    np.testing.assert_allclose(D, eD, rtol=1e-4, atol=1e-5)
    assert (I == eI).mean() > 0.98  # equal scores may swap places
    assert allowed[I[I >= 0]].all()


def test_filters_agree_with_pyarrow_on_the_input(index_dir, corpus):
    """The masks are what the same conditions select on the input table."""
    _, meta = corpus
    s = Searcher(index_dir)
    dates = pc.cast(meta.column("CHARTDATE"), pa.date32())
    want = pc.and_(pc.greater_equal(dates, pa.scalar(dt.date(2150, 3, 1))),
                   pc.less_equal(dates, pa.scalar(dt.date(2150, 4, 15)))).to_numpy()
    np.testing.assert_array_equal(s.allowed(CASES["date range"]), want)
    want = pc.equal(meta.column("DESCRIPTION"), "Addendum").fill_null(False).to_numpy()
    np.testing.assert_array_equal(s.allowed(CASES["kept column"]), want)


def test_tombstones_are_in_the_selector(index_dir, corpus, tmp_path, monkeypatch):
    import shutil

    x, _ = corpus
    ix = tmp_path / "ix"
    shutil.copytree(index_dir, ix)
    monkeypatch.setattr(loaded, "EXACT_SUBSET_ROWS", 0)
    s = Searcher(ix)
    f = Filters(where=["HADM_ID<100300"])  # rows 0..1799
    (before,) = s.search_vectors(x[5], k=5, filters=f)
    gone = [h.id for h in before[:3]]
    remove_from_index(gone, index_dir=ix)
    (after,) = s.search_vectors(x[5], k=5, filters=f)  # same Searcher: it reloads
    assert not set(gone) & {h.id for h in after} and len(after) == 5
    assert all(h.admission < 100300 for h in after)


def test_hits_carry_typed_metadata_and_convert_to_tables(index_dir, corpus):
    x, _ = corpus
    res = Searcher(index_dir).search_vectors(x[:2], k=3, filters=Filters(
        where=["DESCRIPTION=Report"]))
    hit = res[0][0]
    assert hit.metadata["DESCRIPTION"] == "Report" and isinstance(hit.subject, int)
    t = res.to_arrow()
    assert t.num_rows == 6 and t.schema.field("CHARTDATE").type == pa.date32()
    assert t.schema.field("HADM_ID").type == pa.int64()
    df = res.to_pandas()
    assert str(df["SUBJECT_ID"].dtype) == "Int64" and list(df["rank"]) == [1, 2, 3] * 2


@pytest.mark.parametrize(("filters", "message"), [
    (Filters(categories=["Radiologyy"]), (r"CATEGORY \['Radiologyy'\] not in this index; "
                                         r"valid: \['Discharge summary', 'ECG', 'Nursing', "
                                         r"'Radiology'\]")),
    (Filters(where=["DESCRIPTON=Report"]), r"no column 'DESCRIPTON'.*DESCRIPTION \(string\)"),
    (Filters(where=["description=Report"]), r"did you mean 'DESCRIPTION'"),
    (Filters(where=["HADM_ID>=soon"]), r"HADM_ID holds int64 values; 'soon' is not one"),
    (Filters(where=["HADM_ID"]), r"expected COLUMN<op>VALUE"),
    (Filters(where=["CATEGORY=,,"]), r"no value after '='"),
    (Filters(subjects=[999999]), r"SUBJECT_ID \[999999\] not in this index"),
    (Filters(since="March"), r"CHARTDATE holds date32\[day\] values; 'March' is not one"),
    (Filters(since="2150-01-01", date_col="DESCRIPTION"), r"since/until need a date column"),
    (Filters(where=["DESCRIPTION=Reprot"]), r"DESCRIPTION \['Reprot'\] not in this index"),
])
def test_a_typo_is_an_error_naming_the_valid_choices(index_dir, filters, message):
    with pytest.raises(ValueError, match=message):
        Searcher(index_dir).allowed(filters)


def test_a_bare_string_is_refused():
    with pytest.raises(TypeError, match=r"categories=\['Radiology'\]"):
        Filters(categories="Radiology")
    with pytest.raises(TypeError, match="give a list"):
        Filters(subjects="2588")


def test_no_filter_no_mask_and_empty_results(index_dir, corpus):
    x, _ = corpus
    s = Searcher(index_dir)
    assert s.allowed(None) is None and s.allowed(Filters()) is None
    (hits,) = s.search_vectors(x[0], k=5, filters=Filters(
        subjects=[2500], since="2151-01-01"))  # both exist, never together
    assert hits == []


