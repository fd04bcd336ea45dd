"""Faults against a live server on 127.0.0.1: clients that go away mid-request, a bounded
burst of good and bad requests at once, kill -9 of the server during another process's add
and of the add under a serving server. Every request gets a 4xx or a correct answer, the
server keeps serving, the index stays consistent."""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pandas as pd
import pytest

pytest.importorskip("fastapi")

from fixtures.server import ENV, SERVE_NOTES, mimicsearch, start, stop

from mimicsearch.index import open_index

QUERY = "acute kidney injury, creatinine rising, holding lisinopril"


def raw(url: str, payload: bytes, read: bool = False) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(payload)
        return s.recv(65536) if read else b""


def add_cmd(ix, notes) -> list[str]:
    return [sys.executable, "-m", "mimicsearch", "add", str(ix), str(notes), "--no-progress"]


@pytest.fixture
def copy_index(serve_index, tmp_path):
    ix = tmp_path / "ix"
    shutil.copytree(serve_index, ix)
    return ix


def test_clients_that_go_away(serve_index, tmp_path):
    served = start(serve_index, tmp_path / "log")
    try:
        body = b'{"text": "chest pain radiating to the left arm", "k": 5}'
        head = (b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n")
        raw(served.url, head % 5000 + body[:20])  # promised 5000 bytes, sent 20, left
        for _ in range(8):  # whole requests whose client leaves before the answer
            raw(served.url, head % len(body) + body)
        raw(served.url, b"GARBAGE \x00\xff HTTP/9\r\n\r\n")
        raw(served.url, b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
        reply = raw(served.url, b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n"
                    b"Connection: close\r\n\r\n", read=True)
        assert reply.startswith(b"HTTP/1.1 400")
        time.sleep(0.5)
        with served.client() as c:
            r = c.post("/search", json={"text": QUERY, "k": 5})
            assert r.status_code == 200 and len(r.json()["hits"]) == 5
        assert served.proc.poll() is None
        assert "Traceback" not in served.log_text()
    finally:
        stop(served)


def test_burst_of_good_and_bad_requests(serve_index, tmp_path):
    served = start(serve_index, tmp_path / "log")
    requests = [
        ("POST", "/search", {"json": {"text": QUERY, "k": 5}}, {200}),
        ("POST", "/search", {"content": b"{oops"}, {400}),
        ("POST", "/search", {"json": {"text": QUERY, "k": "x"}}, {422}),
        ("POST", "/search", {"json": {"text": QUERY, "categories": ["Nope"]}}, {400}),
        ("POST", "/search", {"content": b"x" * (2 << 20)}, {413}),
        ("GET", "/notes/424242424", {}, {404}),
        ("POST", "/v1/embeddings", {"json": {"input": ["a", "b"], "model": "model"}}, {200}),
        ("POST", "/v1/embeddings", {"json": {"input": "a", "model": "nope"}}, {404}),
        ("GET", "/info", {}, {200}),
    ] * 12  # 108 requests, 8 at a time
    try:
        with served.client() as c, ThreadPoolExecutor(8) as pool:
            def call(req):
                method, path, kw, ok = req
                r = c.request(method, path, headers={"content-type": "application/json"}, **kw)
                return r.status_code in ok and "error" in r.json() if r.status_code >= 400 \
                    else r.status_code in ok
            results = list(pool.map(call, requests))
            assert all(results)
            assert 'status="500"' not in c.get("/metrics").text
    finally:
        stop(served)


def _hammer(served, stop_flag: threading.Event, statuses: list) -> None:
    with served.client() as c:
        while not stop_flag.is_set():
            try:
                r = c.post("/search", json={"text": QUERY, "k": 5})
                statuses.append(r.status_code)
                if r.status_code == 200:
                    assert len(r.json()["hits"]) == 5
            except httpx.TransportError:
                statuses.append("gone")
                return


def test_kill_9_server_during_add_then_restart(copy_index, serve_notes, tmp_path):
    ix, later = copy_index, pd.read_csv(serve_notes[1])
    served = start(ix, tmp_path / "log")
    statuses: list = []
    flag = threading.Event()
    workers = [threading.Thread(target=_hammer, args=(served, flag, statuses))
               for _ in range(3)]
    for w in workers:
        w.start()
    add = subprocess.Popen(add_cmd(ix, serve_notes[1]), env=ENV, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    served.kill()
    flag.set()
    for w in workers:
        w.join(30)
    _, err = add.communicate(timeout=300)
    assert add.returncode == 0, err
    answered = [s for s in statuses if s != "gone"]
    assert answered and set(answered) == {200}  # all answered in full before the kill

    again = start(ix, tmp_path / "log2")
    try:
        with again.client() as c:
            assert c.get("/info").json()["notes"] == SERVE_NOTES + 20
            for note_id, text in zip(later.ROW_ID[:5], later.TEXT[:5]):
                assert c.get(f"/notes/{note_id}").json()["text"] == text
        index = open_index(ix, verify=True)
        assert int(index.store.live.sum()) == SERVE_NOTES + 20 == index.ntotal
    finally:
        stop(again)


def test_kill_9_of_add_under_a_serving_server(copy_index, serve_notes, tmp_path):
    ix = copy_index
    served = start(ix, tmp_path / "log")
    statuses: list = []
    flag = threading.Event()
    worker = threading.Thread(target=_hammer, args=(served, flag, statuses))
    worker.start()
    try:
        add = subprocess.Popen(add_cmd(ix, serve_notes[1]), env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2.5)
        add.kill()
        add.wait(30)
        with served.client() as c:
            notes = c.get("/info").json()["notes"]
            assert notes in (SERVE_NOTES, SERVE_NOTES + 20)  # before or after, never between
        rerun = mimicsearch("add", ix, serve_notes[1], "--no-progress")
        if notes == SERVE_NOTES:
            assert rerun.returncode == 0, rerun.stderr
        with served.client() as c:
            assert c.get("/info").json()["notes"] == SERVE_NOTES + 20
        flag.set()
        worker.join(30)
        assert statuses and set(statuses) == {200}
        assert served.proc.poll() is None
    finally:
        flag.set()
        stop(served)
