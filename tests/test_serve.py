"""`mimicsearch serve` against a live server on 127.0.0.1: every route and filter against
the library's own answers, the OpenAI response shape (and the openai client), auth, limits,
logs without text, and reloads after another process's add/remove. Real model, real index,
real HTTP."""
from __future__ import annotations

import base64
import re
import shutil

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("fastapi")

from fixtures.server import mimicsearch, start, stop

from mimicsearch.encoder import Encoder
from mimicsearch.filters import Filters
from mimicsearch.fusion import Fusion
from mimicsearch.search import Searcher

pytestmark = pytest.mark.filterwarnings("ignore::mimicsearch.pipeline.TruncationWarning")
QUERY = "worsening shortness of breath with bilateral pleural effusions"
SECRET = "zebraquokka-marker-7731"  # must never reach the server log


@pytest.fixture(scope="module")
def server(serve_index, tmp_path_factory):
    served = start(serve_index, tmp_path_factory.mktemp("serve") / "server.log",
                   "--batch-wait-ms", "20", "--max-k", "50", "--max-inputs", "8",
                   "--max-body-bytes", "65536", "--max-text-chars", "4000")
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
def csv_notes(serve_notes) -> pd.DataFrame:
    return pd.read_csv(serve_notes[0])


def ids(hits) -> list:
    return [h["id"] for h in hits]


def post_search(http, **body) -> dict:
    r = http.post("/search", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_text_search_is_the_librarys_answer(http, lib):
    got = post_search(http, text=QUERY, k=10, mode="dense")
    want = lib.search_texts([QUERY], k=10, mode="dense")[0]
    assert ids(got["hits"]) == [h.id for h in want]
    assert [h["score"] for h in got["hits"]] == pytest.approx([h.score for h in want], abs=1e-5)
    first = got["hits"][0]
    assert first["retrievers"] == {"dense": {"rank": 1, "score": first["score"]}}
    assert set(first["metadata"]) == {"SUBJECT_ID", "HADM_ID", "CATEGORY", "CHARTDATE",
                                      "CHARTTIME", "ISERROR"}
    assert got["mode"] == "dense" and got["query"] == {"text_chars": len(QUERY)}
    assert got["auto"] is None and got["setting"] == "dense"


def test_the_default_mode_is_the_indexs_calibrated_choice(http, lib):
    chosen = lib.auto()
    assert lib.index.manifest.calibration is not None  # build-index calibrated it
    got = post_search(http, text=QUERY, k=10)
    want = lib.search_texts([QUERY], k=10, mode=chosen.mode, fusion=chosen.fusion)[0]
    assert ids(got["hits"]) == [h.id for h in want]
    assert [h["retrievers"] for h in got["hits"]] == [h.retrievers for h in want]
    assert (got["mode"], got["setting"]) == (chosen.mode, chosen.label)
    assert got["auto"] == lib.describe_auto() and got["auto"]["calibrated"] is True
    patients = http.post("/patients/search", json={"text": QUERY, "k": 5}).json()
    assert patients["setting"] == lib.auto(patients=True).label == "lexical"
    # a fusion setting with auto asks for a hybrid: the index's fusion with it changed
    got = post_search(http, text=QUERY, k=10, fusion={"k": 10})
    fusion = lib.fusion_for(k=10)
    assert got["mode"] == "hybrid" and got["fusion"] == fusion.to_dict()
    assert ids(got["hits"]) == [h.id for h in lib.search_texts([QUERY], k=10, mode="hybrid",
                                                                fusion=fusion)[0]]


@pytest.mark.parametrize("body,filters", [
    ({"categories": ["radiology"]}, Filters(categories=["Radiology"])),
    ({"since": "2150-01-01", "until": "2190-12-31"},
     Filters(since="2150-01-01", until="2190-12-31")),
    ({"where": ["CATEGORY!=Nursing/other", "HADM_ID>=150000"]},
     Filters(where=["CATEGORY!=Nursing/other", "HADM_ID>=150000"])),
    ({"since": "2150-01-01", "date_col": "CHARTDATE", "categories": ["ECG", "Echo"]},
     Filters(since="2150-01-01", categories=["ECG", "Echo"])),
])
def test_every_filter_matches_the_library(http, lib, body, filters):
    got = post_search(http, text=QUERY, k=15, **body)
    want = lib.search_texts([QUERY], k=15, filters=filters)[0]
    assert ids(got["hits"]) == [h.id for h in want] and len(want) > 0


def test_patient_filters(http, lib, csv_notes):
    subject = int(csv_notes.SUBJECT_ID.iloc[0])
    only = post_search(http, text=QUERY, k=50, subjects=[subject], mode="dense")["hits"]
    assert only and {h["subject"] for h in only} == {subject}
    assert len(only) == min(50, int((csv_notes.SUBJECT_ID == subject).sum()))
    others = post_search(http, text=QUERY, k=50, exclude_subjects=[subject])["hits"]
    assert subject not in {h["subject"] for h in others}
    want = lib.search_texts([QUERY], k=50, filters=Filters(exclude_subjects=[subject]))[0]
    assert ids(others) == [h.id for h in want]


def test_note_is_whole_with_metadata(http, csv_notes):
    row = csv_notes.iloc[7]
    r = http.get(f"/notes/{row.ROW_ID}")
    assert r.status_code == 200
    note = r.json()
    assert note["text"] == row.TEXT and len(note["text"]) > len(note["snippet"])
    assert note["subject"] == row.SUBJECT_ID and note["category"] == row.CATEGORY
    assert note["time"] == row.CHARTDATE


def test_similar_and_other_patients_only(http, lib, csv_notes):
    note_id = int(csv_notes.ROW_ID.iloc[3])
    subject = int(csv_notes.SUBJECT_ID.iloc[3])
    got = http.get(f"/notes/{note_id}/similar", params={"k": 8}).json()["hits"]
    assert ids(got) == [h.id for h in lib.search_notes([note_id], k=8)[0]]
    assert note_id not in ids(got)
    others = http.get(f"/notes/{note_id}/similar",
                      params={"k": 8, "other_patients_only": "true"}).json()["hits"]
    assert others and subject not in {h["subject"] for h in others}
    by_post = post_search(http, note_id=note_id, k=8, other_patients_only=True,
                          categories=["ECG", "Radiology"])["hits"]
    assert {h["category"] for h in by_post} <= {"ECG", "Radiology"}
    assert subject not in {h["subject"] for h in by_post}


@pytest.mark.parametrize("mode,fusion", [("lexical", None), ("hybrid", None),
                                         ("hybrid", {"method": "weighted", "depth": 30,
                                                     "lexical_weight": 0.5})])
def test_lexical_and_hybrid_are_the_librarys_answer(http, lib, csv_notes, mode, fusion):
    body = {"text": "heparin drip", "k": 10, "mode": mode, "categories": ["Nursing"]}
    got = post_search(http, **body, **({"fusion": fusion} if fusion else {}))
    want = lib.search_texts(["heparin drip"], k=10, filters=Filters(categories=["Nursing"]),
                            mode=mode, fusion=Fusion(**fusion) if fusion else None)[0]
    assert got["mode"] == mode and ids(got["hits"]) == [h.id for h in want]
    assert [h["score"] for h in got["hits"]] == pytest.approx([h.score for h in want],
                                                              abs=1e-5)
    assert [h["retrievers"] for h in got["hits"]] == [h.retrievers for h in want]
    assert {h["category"] for h in got["hits"]} == {"Nursing"}
    note_id = int(csv_notes.ROW_ID.iloc[5])
    similar = http.get(f"/notes/{note_id}/similar", params={"k": 5, "mode": mode}).json()
    assert ids(similar["hits"]) == [h.id for h in lib.search_notes([note_id], k=5,
                                                                   mode=mode)[0]]


def test_similar_patients_route(http, lib, csv_notes):
    subject = int(csv_notes.SUBJECT_ID.iloc[0])
    got = http.get(f"/patients/{subject}/similar", params={"k": 4, "mode": "hybrid"}).json()
    want = lib.similar_patients(subject_id=subject, k=4, mode="hybrid")
    assert got["subject"] == subject and got["mode"] == "hybrid"
    assert [p["subject"] for p in got["patients"]] == [p.subject for p in want]
    assert subject not in [p["subject"] for p in got["patients"]]
    assert got["patients"][0]["best"]["subject"] == got["patients"][0]["subject"]
    assert [p["retrievers"] for p in got["patients"]] == [p.retrievers for p in want]
    assert all(set(p["retrievers"]) == {"dense", "lexical"} for p in got["patients"])
    dense = http.get(f"/patients/{subject}/similar", params={"k": 4}).json()["patients"]
    assert [p["score"] for p in dense] == sorted((p["score"] for p in dense), reverse=True)
    assert http.get("/patients/987654/similar").status_code == 404
    assert http.get("/patients/abc/similar").status_code == 400
    assert http.get(f"/patients/{subject}/similar", params={"k": 51}).status_code == 400


def test_timeline_in_time_order(http, csv_notes):
    subject = int(csv_notes.SUBJECT_ID.iloc[0])
    t = http.get(f"/patients/{subject}/timeline").json()
    mine = csv_notes[csv_notes.SUBJECT_ID == subject]
    assert t["count"] == len(mine) == len(t["notes"])
    assert sorted(n["id"] for n in t["notes"]) == sorted(mine.ROW_ID.tolist())
    dates = [n["time"] for n in t["notes"]]
    assert dates == sorted(dates)


def test_openai_embeddings_shape_and_values(http, minilm_onnx):
    texts = ["Chest x-ray: no acute process.", "Patient on furosemide 40 mg daily."]
    r = http.post("/v1/embeddings", json={"input": texts, "model": "model"})
    assert r.status_code == 200, r.text
    body = r.json()
    enc = Encoder(minilm_onnx, precision="fp32", threads=1)
    assert body["object"] == "list" and body["model"] == "model"
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert all(d["object"] == "embedding" for d in body["data"])
    got = np.array([d["embedding"] for d in body["data"]], np.float32)
    np.testing.assert_allclose(got, enc.encode(texts, prompt="document"), atol=1e-5)
    tokens = sum(enc.token_counts(texts, "document"))
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    b64 = http.post("/v1/embeddings", json={"input": texts[0], "model": "model",
                                           "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(b64["data"][0]["embedding"]), "<f4")
    np.testing.assert_allclose(decoded, got[0], atol=1e-6)


def test_openai_client(server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused-on-loopback")
    out = client.embeddings.create(model="model", input=["Sinus rhythm.", "Normal echo."])
    assert len(out.data) == 2 and len(out.data[0].embedding) == 384
    assert out.usage.prompt_tokens > 0
    assert [m.id for m in client.models.list().data] == ["model"]


@pytest.mark.parametrize("body,status,param", [
    ({"input": "x", "model": "gpt-4"}, 404, "model"),
    ({"input": [], "model": "model"}, 400, "input"),
    ({"input": [1, 2, 3], "model": "model"}, 400, "input"),
    ({"input": [""], "model": "model"}, 400, "input[0]"),
    ({"input": ["a"] * 9, "model": "model"}, 413, "input"),
    ({"input": "a", "model": "model", "dimensions": 100}, 400, "dimensions"),
    ({"input": "a", "model": "model", "encoding_format": "hex"}, 422, "encoding_format"),
    ({"input": "a"}, 422, "model"),
])
def test_embeddings_errors(http, body, status, param):
    r = http.post("/v1/embeddings", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param and r.json()["error"]["message"]


@pytest.mark.parametrize("body,status,words", [
    ({"text": QUERY, "catgories": ["ECG"]}, 422, "unknown field 'catgories'"),
    ({"text": QUERY, "categories": ["Cardiology"]}, 400, "not in this index"),
    ({"text": QUERY, "where": ["HADMID=1"]}, 400, "no column 'HADMID'"),
    ({"text": QUERY, "subjects": [1]}, 400, "not in this index"),
    ({"text": QUERY, "k": 51}, 400, "at most 50"),
    ({"text": QUERY, "k": 0}, 422, "k"),
    ({"text": QUERY, "k": "ten"}, 422, "k"),
    ({"text": QUERY, "mode": "dense", "fusion": {"method": "rrf"}}, 400, "hybrid"),
    ({"text": QUERY, "mode": "hybrid", "fusion": {"method": "max"}}, 422, "fusion"),
    ({"text": QUERY, "mode": "hybrid", "fusion": {"dense_weight": 0, "lexical_weight": 0}},
     400, "both fusion weights"),
    ({"text": QUERY, "mode": "fuzzy"}, 422, "mode"),
    ({"text": "   "}, 400, "empty"),
    ({"text": "x" * 4001}, 413, "4000"),
    ({}, 400, "text or note_id"),
    ({"text": QUERY, "note_id": 1}, 400, "text or note_id"),
    ({"note_id": 987654321}, 404, "not in the index"),
    ({"text": QUERY, "other_patients_only": True}, 400, "note_id queries"),
    ({"text": QUERY, "since": "2150-02-30"}, 422, "since"),
    ({"text": QUERY, "since": "2150-01-01", "date_col": "HADM_ID"}, 400, "need a date column"),
])
def test_search_errors_name_the_field(http, body, status, words):
    r = http.post("/search", json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]["message"]


def test_malformed_bodies_and_unknown_ids(http):
    for raw in (b"{not json", b"[1, 2]", b"", b"\xff\xfe"):
        r = http.post("/search", content=raw, headers={"content-type": "application/json"})
        assert r.status_code in (400, 422) and "error" in r.json(), raw
    assert http.get("/notes/987654321").status_code == 404
    assert http.get("/notes/not-a-number").status_code == 400
    assert http.get("/patients/1/timeline").status_code == 404
    assert http.get("/no/such/route").status_code == 404
    assert http.delete("/search").status_code == 405


def test_limits(server, http):
    big = {"text": QUERY, "where": ["CATEGORY=" + "x" * 70_000]}
    r = http.post("/search", json=big)
    assert r.status_code == 413 and "65536" in r.json()["error"]["message"]

    def chunks():  # no Content-Length: refused while it is read
        for _ in range(20):
            yield b" " * 8192

    r = http.post("/search", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert http.get("/health").status_code == 200


def test_info_health_metrics(http, lib):
    info = http.get("/info").json()
    assert info["notes"] == 240 and info["modes"] == ["auto", "dense", "lexical", "hybrid"]
    assert info["auto"]["notes"]["setting"] == lib.auto().label
    assert info["full_text"] is True
    assert info["model"]["dimensions"] == [384] and info["limits"]["max_k"] == 50
    assert (info["model"]["precision"], info["model"]["runtime"]) == ("fp32", "onnxruntime")
    assert sum(info["categories"].values()) == 240
    assert http.get("/health").json() == {"status": "ok"}
    http.post("/search", json={"text": QUERY})
    assert http.post("/search", json={"text": QUERY, "k": 0}).status_code == 422
    text = http.get("/metrics").text
    assert 'mimicsearch_requests_total{method="POST",route="/search",status="200"}' in text
    assert "mimicsearch_request_seconds_bucket" in text
    assert "mimicsearch_encoder_batch_texts_count" in text
    assert 'mimicsearch_errors_total{route="/search",status="422"}' in text


def test_concurrent_requests_share_batches(server, http):
    from concurrent.futures import ThreadPoolExecutor

    def count(text: str, name: str) -> float:
        line = [ln for ln in text.splitlines() if ln.startswith(name + " ")]
        return float(line[0].split()[-1]) if line else 0.0

    before = http.get("/metrics").text
    texts = [f"note about patient {i} with chest pain" for i in range(16)]
    with ThreadPoolExecutor(8) as pool, server.client() as c:
        codes = list(pool.map(lambda t: c.post("/v1/embeddings", json={
            "input": t, "model": "model"}).status_code, texts))
    assert codes == [200] * 16
    after = http.get("/metrics").text
    calls = (count(after, "mimicsearch_encoder_batch_requests_count")
             - count(before, "mimicsearch_encoder_batch_requests_count"))
    served = (count(after, "mimicsearch_encoder_batch_requests_sum")
              - count(before, "mimicsearch_encoder_batch_requests_sum"))
    assert served == 16 and calls < 16  # some encoder calls answered several requests


def test_headers_cors_off_and_page_assets(http):
    r = http.get("/", headers={"Origin": "http://evil.example"})
    assert r.status_code == 200 and "<title>mimicsearch</title>" in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert "access-control-allow-origin" not in r.headers
    assert r.headers["x-content-type-options"] == "nosniff"
    for asset in ("/static/app.js", "/static/style.css"):
        assert http.get(asset).status_code == 200
    js = http.get("/static/app.js").text
    assert "cdn" not in r.text.lower()
    assert set(re.findall(r"https?://[^\s\"']+", js)) == {"http://www.w3.org/2000/svg"}
    assert http.get("/docs").status_code == 200
    assert http.get("/openapi.json").json()["paths"].keys() >= {
        "/search", "/v1/embeddings", "/notes/{note_id}", "/notes/{note_id}/similar",
        "/patients/{subject_id}/timeline", "/patients/search", "/cohorts/export", "/health",
        "/info", "/metrics"}


def test_logs_hold_no_query_or_note_text(server, http, csv_notes):
    http.post("/search", json={"text": f"{SECRET} dyspnea"})
    http.post("/search", json={"text": f"{SECRET} " * 2000})  # an error path too
    http.post("/v1/embeddings", json={"input": [SECRET], "model": "model"})
    http.post("/search", json={"text": QUERY, "where": [f"CATEGORY={SECRET}"]})
    note = http.get(f"/notes/{csv_notes.ROW_ID.iloc[7]}").json()
    log = server.log_text()
    assert "POST /search 200" in log and "POST /v1/embeddings 200" in log
    assert SECRET not in log
    assert note["text"][40:120] not in log


def test_api_key(serve_index, tmp_path):
    key = "k" * 12 + "secret-key-0123"
    key_file = tmp_path / "key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    served = start(serve_index, tmp_path / "log", "--api-key-file", str(key_file), key=key)
    try:
        with served.client(key=None) as anon, served.client(key="wrong" * 5) as wrong, \
                served.client() as ok:
            for c, status in ((anon, 401), (wrong, 401), (ok, 200)):
                r = c.post("/search", json={"text": QUERY})
                assert r.status_code == status
                assert c.get("/notes/1").status_code in ((401,) if status == 401 else (200, 404))
            assert anon.post("/v1/embeddings", json={"input": "a", "model": "model"}
                             ).status_code == 401
            assert anon.get("/metrics").status_code == 401
            assert anon.get("/health").status_code == 200 and anon.get("/").status_code == 200
            assert anon.post("/search", json={"text": "a"}).headers["www-authenticate"] == \
                "Bearer"
            assert ok.get("/info").json()["auth"] is True
        assert key not in served.log_text()
    finally:
        stop(served)


def test_other_addresses_need_a_key(serve_index, tmp_path):
    run = mimicsearch("serve", serve_index, "--host", "0.0.0.0", "--port", "1", timeout=60)
    assert run.returncode == 1 and "--api-key-file" in run.stderr
    assert "Traceback" not in run.stderr
    short = tmp_path / "key"
    short.write_text("abc")
    run = mimicsearch("serve", serve_index, "--api-key-file", short, timeout=60)
    assert run.returncode == 1 and "at least 16" in run.stderr


def test_cors_when_configured(serve_index, tmp_path):
    served = start(serve_index, tmp_path / "log", "--cors-origin", "http://lab.example")
    try:
        with served.client() as c:
            r = c.get("/health", headers={"Origin": "http://lab.example"})
            assert r.headers["access-control-allow-origin"] == "http://lab.example"
            r = c.get("/health", headers={"Origin": "http://evil.example"})
            assert "access-control-allow-origin" not in r.headers
    finally:
        stop(served)


def test_serves_another_processs_add_and_remove(serve_index, serve_notes, tmp_path):
    ix = tmp_path / "ix"
    shutil.copytree(serve_index, ix)
    later = pd.read_csv(serve_notes[1])
    served = start(ix, tmp_path / "log")
    try:
        with served.client() as c:
            new_id = int(later.ROW_ID.iloc[0])
            assert c.get(f"/notes/{new_id}").status_code == 404
            add = mimicsearch("add", ix, serve_notes[1], "--no-progress")
            assert add.returncode == 0, add.stderr
            note = c.get(f"/notes/{new_id}")
            assert note.status_code == 200 and note.json()["text"] == later.TEXT.iloc[0]
            assert c.get("/info").json()["notes"] == 260
            hits = c.post("/search", json={"text": later.TEXT.iloc[1][:300], "k": 3}).json()
            assert int(later.ROW_ID.iloc[1]) in ids(hits["hits"])
            rm = mimicsearch("remove", ix, "--ids", new_id)
            assert rm.returncode == 0, rm.stderr
            assert c.get(f"/notes/{new_id}").status_code == 404
            hits = c.post("/search", json={"text": later.TEXT.iloc[0][:300], "k": 50}).json()
            assert new_id not in ids(hits["hits"])
            assert "mimicsearch_index_reloads_total 2.0" in c.get("/metrics").text

            snapshot = pd.read_csv(serve_notes[0])
            edited_id = int(snapshot.ROW_ID.iloc[9])
            snapshot.loc[9, "TEXT"] += " Addendum: reviewed again today."
            snapshot.iloc[:200].to_csv(tmp_path / "tonight.csv", index=False)
            sync = mimicsearch("sync", ix, tmp_path / "tonight.csv", "--remove-missing",
                               "--no-progress")
            assert sync.returncode == 0, sync.stderr
            assert c.get(f"/notes/{edited_id}").json()["text"] == snapshot.TEXT.iloc[9]
            assert c.get("/info").json()["notes"] == 200
            gone = int(snapshot.ROW_ID.iloc[230])
            assert c.get(f"/notes/{gone}").status_code == 404
    finally:
        stop(served)


def test_an_index_without_whole_texts(serve_notes, minilm_onnx, tmp_path):
    from mimicsearch.index import BuildOptions
    from mimicsearch.options import EncodeOptions
    from mimicsearch.pipeline import build_index_from

    notes = pd.read_csv(serve_notes[0]).iloc[:30]
    build_index_from(notes, out_dir=tmp_path / "ix", model_dir=minilm_onnx,
                     encode=EncodeOptions(max_length=32, precision="fp32", snippets=True),
                     build=BuildOptions(index_key="Flat"), progress=False)
    served = start(tmp_path / "ix", tmp_path / "log")
    try:
        with served.client() as c:
            info = c.get("/info").json()
            assert info["full_text"] is False and info["modes"] == ["auto", "dense"]
            r = c.post("/search", json={"text": "heparin", "mode": "lexical"})
            assert r.status_code == 400 and "modes here: ['dense']" in r.json()["error"]["message"]
            note = c.get(f"/notes/{notes.ROW_ID.iloc[0]}").json()
            assert note["text"] is None and notes.TEXT.iloc[0].startswith(note["snippet"][:40])
    finally:
        stop(served)
