"""Patient search and cohort export over HTTP against a live server on 127.0.0.1: the
library's answers, the cohort file (CSV and Parquet) equal to the search that made it and
the same for the same request, filters and modes applied, limits and errors as elsewhere, no
query text in the log; and no error of any route names a path on the server. Real model,
real index, real HTTP."""
from __future__ import annotations

import io
import json
import re
import sys

import pandas as pd
import pyarrow.parquet as pq
import pytest

pytest.importorskip("fastapi")

from fixtures.server import start, stop

from mimicsearch.filters import Filters
from mimicsearch.fusion import Fusion
from mimicsearch.search import Searcher

pytestmark = pytest.mark.filterwarnings("ignore::mimicsearch.pipeline.TruncationWarning")
QUERY = "chest pain, troponin rising, started on heparin"
SECRET = "okapiwombat-marker-4471"  # must never reach the server log


@pytest.fixture(scope="module")
def server(serve_index, tmp_path_factory):
    served = start(serve_index, tmp_path_factory.mktemp("serve_patients") / "server.log",
                   "--max-k", "50", "--max-body-bytes", "65536", "--max-text-chars", "4000")
    yield served
    stop(served)


@pytest.fixture(scope="module")
def http(server):
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def lib(serve_index, minilm_onnx):
    return Searcher(serve_index, model_dir=minilm_onnx)


@pytest.fixture(scope="module")
def subject(serve_notes) -> int:
    return int(pd.read_csv(serve_notes[0]).SUBJECT_ID.iloc[0])


def found(http, **body) -> dict:
    r = http.post("/patients/search", json=body)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_patient_search_is_the_librarys_answer(http, lib, subject, mode):
    filters = Filters(categories=["Nursing/other", "Radiology"])
    for query, kwargs in (({"text": QUERY}, {"text": QUERY}),
                          ({"subject_id": subject}, {"subject_id": subject})):
        got = found(http, **query, k=6, mode=mode, categories=["nursing/other", "radiology"])
        want = lib.similar_patients(**kwargs, k=6, mode=mode, filters=filters)
        assert [p["subject"] for p in got["patients"]] == [p.subject for p in want]
        assert [p["score"] for p in got["patients"]] == pytest.approx(
            [p.score for p in want], abs=1e-5)
        for p, w in zip(got["patients"], want):
            assert [m["id"] for m in p["matches"]] == [m.id for m in w.matches]
            assert p["admissions"] == w.admissions and p["categories"] == w.categories
            assert p["first_date"] == str(w.first_date) and p["notes"] == w.notes
            assert set(p["categories"]) <= {"Nursing/other", "Radiology"}
        assert got["mode"] == mode and got["filters"]["categories"] == ["nursing/other",
                                                                        "radiology"]
        assert (got["fusion"] is None) == (mode != "hybrid")
    assert "text" not in found(http, text=QUERY, k=2)["query"]  # only its length


def test_cohort_export_is_the_search_that_made_it(http, subject):
    body = {"text": QUERY, "k": 6, "mode": "hybrid",
            "fusion": {"method": "weighted", "lexical_weight": 0.5}, "since": "2100-01-01"}
    answer = found(http, **body)["patients"]
    assert len(answer) == 6  # every patient of the served index
    chosen = [answer[i]["subject"] for i in (0, 1, 3, 4, 5)]
    r = http.post("/cohorts/export", json={**body, "select": chosen[::-1], "name": "five / pts"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"] == 'attachment; filename="five-pts.csv"'
    csv = pd.read_csv(io.BytesIO(r.content))
    assert csv.subject.tolist() == chosen and csv["rank"].tolist() == [1, 2, 4, 5, 6]
    assert csv.score.tolist() == pytest.approx([answer[i]["score"] for i in (0, 1, 3, 4, 5)])
    assert json.loads(csv.fusion[0]) == Fusion("weighted", lexical_weight=0.5).to_dict()
    assert json.loads(csv.filters[0])["since"] == "2100-01-01"
    assert json.loads(csv["query"][0]) == {"text": QUERY, "text_chars": len(QUERY)}
    again = pd.read_csv(io.BytesIO(http.post("/cohorts/export", json={
        **body, "select": chosen[::-1], "name": "five / pts"}).content))
    assert again.drop(columns="exported_at").equals(csv.drop(columns="exported_at"))

    r = http.post("/cohorts/export", json={"text": QUERY, "k": 5, "format": "parquet",
                                           "categories": ["ECG"], "mode": "dense"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.apache.parquet"
    cohort = pq.read_table(io.BytesIO(r.content))
    want = found(http, text=QUERY, k=5, categories=["ECG"], mode="dense")["patients"]
    assert cohort.column("subject").to_pylist() == [p["subject"] for p in want]
    assert len(want) > 1
    assert all(c == ["ECG"] for c in cohort.column("categories").to_pylist())
    request = json.loads(cohort.schema.metadata[b"mimicsearch.cohort"])
    assert request["query"] == {"text": QUERY, "text_chars": len(QUERY)}
    assert request["mode"] == "dense" and len(request["index"]) == 16
    auto = pq.read_table(io.BytesIO(http.post("/cohorts/export", json={
        "text": QUERY, "k": 5, "format": "parquet"}).content))
    request = json.loads(auto.schema.metadata[b"mimicsearch.cohort"])
    assert request["mode"] == "lexical"  # auto, as it resolved on this index
    r = http.post("/cohorts/export", json={"text": "zzzqqq", "mode": "lexical"})
    empty = pd.read_csv(io.BytesIO(r.content))
    assert r.status_code == 200 and len(empty) == 0 and "matching_note_ids" in empty.columns


@pytest.mark.parametrize("route", ["/patients/search", "/cohorts/export"])
@pytest.mark.parametrize("body,status,words", [
    ({"text": QUERY, "subject_id": 1}, 400, "exactly one of"),
    ({}, 400, "exactly one of"),
    ({"text": QUERY, "k": 51}, 400, "at most 50"),
    ({"text": QUERY, "categries": ["ECG"]}, 422, "unknown field 'categries'"),
    ({"text": QUERY, "categories": ["Cardiology"]}, 400, "not in this index"),
    ({"text": QUERY, "mode": "lexical", "fusion": {"method": "rrf"}}, 400, "hybrid"),
    ({"text": "x" * 4001}, 413, "4000"),
    ({"subject_id": 987654}, 404, "not in this index"),
    ({"note_id": 987654321}, 404, "not in the index"),
    ({"text": QUERY, "mode": "fuzzy"}, 422, "mode"),
])
def test_patient_and_cohort_errors_name_the_field(http, route, body, status, words):
    r = http.post(route, json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]["message"]


def test_cohort_errors_and_limits(http):
    r = http.post("/cohorts/export", json={"text": QUERY, "k": 3, "select": [123456789]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "select"
    assert "raise k" in r.json()["error"]["message"]
    r = http.post("/cohorts/export", json={"text": QUERY, "format": "xlsx"})
    assert r.status_code == 422 and r.json()["error"]["param"] == "format"
    r = http.post("/cohorts/export", json={"text": QUERY, "where": ["CATEGORY=" + "x" * 70_000]})
    assert r.status_code == 413


def test_logs_hold_no_patient_query_text(server, http):
    found(http, text=f"{SECRET} dyspnea", k=3)
    http.post("/cohorts/export", json={"text": f"{SECRET} sepsis", "k": 3})
    http.post("/cohorts/export", json={"text": f"{SECRET} sepsis", "name": SECRET})
    http.post("/patients/search", json={"text": QUERY, "where": [f"CATEGORY={SECRET}"]})
    log = server.log_text()
    assert "POST /patients/search 200" in log and "POST /cohorts/export 200" in log
    assert SECRET not in log


def test_no_error_names_a_server_path(http, serve_index, minilm_onnx, subject):
    """Every route's error answers, swept: none holds a path of this machine."""
    bad = [("POST", "/v1/embeddings", {"input": "a", "model": "model", "dimensions": 128}),
           ("POST", "/v1/embeddings", {"input": "a", "model": "nope"}),
           ("POST", "/v1/embeddings", {"input": [], "model": "model"}),
           ("POST", "/search", {"text": QUERY, "where": ["NOPE=1"]}),
           ("POST", "/search", {"note_id": 987654321}),
           ("POST", "/search", {"text": QUERY, "mode": "hybrid",
                                "fusion": {"dense_weight": 0, "lexical_weight": 0}}),
           ("POST", "/search", {"text": QUERY, "since": "2150-01-01", "date_col": "HADM_ID"}),
           ("POST", "/patients/search", {"subject_id": "abc"}),
           ("POST", "/patients/search", {"text": QUERY, "where": ["CHARTDATE>=soon"]}),
           ("POST", "/cohorts/export", {"text": QUERY, "select": ["x"]}),
           ("GET", "/notes/987654321", None), ("GET", "/notes/abc", None),
           ("GET", "/notes/abc/similar", None), ("GET", "/patients/abc/similar", None),
           ("GET", f"/patients/{subject}/similar?k=0", None),
           ("GET", "/patients/987654/timeline", None), ("GET", "/no/such/route", None),
           ("DELETE", "/search", None), ("POST", "/search", b"{not json")]
    here = [str(serve_index), str(minilm_onnx), sys.prefix, str(serve_index.parent)]
    for method, path, body in bad:
        kw = {"content": body, "headers": {"content-type": "application/json"}} \
            if isinstance(body, bytes) else {"json": body} if body is not None else {}
        r = http.request(method, path, **kw)
        assert 400 <= r.status_code < 500, (path, r.text)
        message = r.json()["error"]["message"]
        assert not any(p in message for p in here), (path, message)
        assert not re.search(r"/(tmp|work|root|home|usr|opt|var)/", message), (path, message)
