"""kill -9 `build-index` and `add` at random points, re-run, and compare with runs that were
never interrupted: same shard and store contents, same search results, and whatever a killed
run left behind is either complete (its manifest verifies) or ignored.

`encode` is covered by tests/test_encode.py::test_resume_after_kill_9_gives_identical_files.
More seeds: MIMICSEARCH_CRASH_SEEDS=20 (see `make soak`).
"""
import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mimicsearch.index import open_index
from mimicsearch.index.manifest import IndexManifest

SEEDS = int(os.environ.get("MIMICSEARCH_CRASH_SEEDS", "2"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def cli(*args) -> list[str]:
    return [sys.executable, "-c", "from mimicsearch.cli import main; main()", *map(str, args)]


def subset(src: Path, dst: Path, first: int, n: int) -> Path:
    """Records first..first+n of a NOTEEVENTS.csv (multi-line notes copied whole)."""
    with open(src, newline="", encoding="utf-8") as f, \
            open(dst, "w", newline="", encoding="utf-8") as g:
        r, w = csv.reader(f), csv.writer(g)
        w.writerow(next(r))
        for i, row in enumerate(r):
            if i >= first + n:
                break
            if i >= first:
                w.writerow(row)
    return dst


@pytest.fixture(scope="module")
def notes(synth_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("crash")
    src = synth_dir / "NOTEEVENTS.csv"
    return subset(src, d / "base.csv", 0, 240), subset(src, d / "more.csv", 240, 120)


def snapshot(index_dir: Path) -> dict:
    """What a user can observe: file contents by hash, search params, rows and hits."""
    m = IndexManifest.load(index_dir)
    ix = open_index(index_dir)  # verifies every file's sha256
    q = np.random.default_rng(0).standard_normal((8, m.dimension)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    D, I = ix.search(q, 10)[:2]
    return {"shards": [s.index.sha256 for s in m.shards],
            "store": [p.file.sha256 for p in m.store_parts],
            "rows": m.rows, "search_params": m.search_params,
            "ids": np.asarray(I).tolist(), "dist": np.round(np.asarray(D), 5).tolist()}


def kill_at_random(args: list[str], out: Path, seed: int, window: float) -> int:
    """Start `args`, wait until it touches `out`, kill -9 it a random time later."""
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    mtime = out.stat().st_mtime_ns if out.exists() else None
    while proc.poll() is None and time.monotonic() - t0 < 120:
        if out.exists() and out.stat().st_mtime_ns != mtime:
            break
        time.sleep(0.005)
    time.sleep(random.Random(seed).uniform(0, window))
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return proc.returncode


def check_leftovers(index_dir: Path):
    """A manifest left by a killed run only ever names complete, verified files."""
    if (index_dir / "manifest.json").exists():
        open_index(index_dir)


def timed(args) -> float:
    t0 = time.monotonic()
    subprocess.run(args, env=ENV, check=True, capture_output=True)
    return time.monotonic() - t0


@pytest.mark.parametrize("key", ["Flat", "IVF8,Flat"])
def test_build_index_killed_and_rerun_equals_uninterrupted(tmp_path, notes, tiny_gemma_onnx, key):
    base, _ = notes

    def build(out):
        return cli("build-index", base, "--model", tiny_gemma_onnx, "--out", out,
                   "--index-key", key, "--shard-size", 100, "--no-progress")

    full = tmp_path / "full"
    window = timed(build(full))
    want = snapshot(full)
    killed = 0
    for seed in range(SEEDS):
        out = tmp_path / f"killed-{seed}"
        rc = kill_at_random(build(out), out, seed, window)
        killed += rc == -signal.SIGKILL
        check_leftovers(out)
        done = (out / "manifest.json").exists() and IndexManifest.load(out).quality is not None
        rerun = subprocess.run(build(out), env=ENV, check=False, capture_output=True,
                               text=True)
        if done:  # finished (or killed after its last write): the re-run refuses to redo it
            assert rerun.returncode == 1 and "already holds an index" in rerun.stderr
        else:
            assert rerun.returncode == 0, (rc, rerun.stderr[-1500:])
        assert snapshot(out) == want, f"seed {seed}"
    assert killed >= 1, "no run was killed before it finished"


@pytest.mark.parametrize("key", ["Flat", "IVF8,Flat"])
def test_add_killed_and_rerun_equals_uninterrupted(tmp_path, notes, tiny_gemma_onnx, key):
    base, more = notes
    built = tmp_path / "built"
    subprocess.run(cli("build-index", base, "--model", tiny_gemma_onnx, "--out", built,
                       "--index-key", key, "--shard-size", 100, "--no-progress"),
                   env=ENV, check=True, capture_output=True)

    def copy(dst):
        subprocess.run(["cp", "-a", str(built), str(dst)], check=True)
        return dst

    def add(ix):
        return cli("add", ix, more, "--no-progress", "--json")

    full = copy(tmp_path / "full")
    window = timed(add(full))
    want = snapshot(full)
    assert want["rows"] == 360
    killed = 0
    for seed in range(SEEDS):
        ix = copy(tmp_path / f"killed-{seed}")
        rc = kill_at_random(add(ix), ix, seed, window)
        killed += rc == -signal.SIGKILL
        check_leftovers(ix)
        rows = IndexManifest.load(ix).rows
        assert rows in (240, 360), rows  # all of the add or none of it
        rerun = subprocess.run(add(ix), env=ENV, check=False, capture_output=True, text=True)
        if rows == 360:  # the kill came after the commit: the re-run refuses the ids
            assert rerun.returncode == 1 and "already in the index" in rerun.stderr
        else:
            assert rerun.returncode == 0, rerun.stderr[-1500:]
            assert json.loads(rerun.stdout)["added"] == 120
        assert snapshot(ix) == want, f"seed {seed}"
    assert killed >= 1, "no run was killed before it finished"


def test_build_index_killed_before_tuning_is_built_again(tmp_path, notes, tiny_gemma_onnx):
    """A kill between the first manifest write and the tuned one used to leave an untuned
    index that every re-run refused as "already holds an index"."""
    base, _ = notes
    args = ["--model", tiny_gemma_onnx, "--index-key", "IVF8,Flat", "--no-progress"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    for out in (full, cut):
        subprocess.run(cli("build-index", base, "--out", out, *args), env=ENV, check=True,
                       capture_output=True)
    IndexManifest.load(cut).with_(quality=None, search_params={}).save(cut)
    rerun = subprocess.run(cli("build-index", base, "--out", cut, *args), env=ENV,
                           check=False, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-1500:]
    assert snapshot(cut) == snapshot(full)
    again = subprocess.run(cli("build-index", base, "--out", cut, *args), env=ENV,
                           check=False, capture_output=True, text=True)
    assert again.returncode == 1 and "already holds an index" in again.stderr


def test_encode_rerun_on_a_finished_dir_is_a_no_op(tmp_path, notes, tiny_gemma_onnx):
    """Re-running a finished encode used to crash ('tuple_iterator' has no close)."""
    base, _ = notes
    args = cli("encode", base, "--model", tiny_gemma_onnx, "--out", tmp_path / "emb",
               "--no-progress", "--json")
    first = subprocess.run(args, env=ENV, check=True, capture_output=True, text=True)
    files = {p.name: p.read_bytes() for p in (tmp_path / "emb").iterdir()}
    second = subprocess.run(args, env=ENV, check=False, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-1500:]
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert {k: b[k] for k in ("read", "encoded", "rejected")} == \
        {k: a[k] for k in ("read", "encoded", "rejected")}
    assert {p.name: p.read_bytes() for p in (tmp_path / "emb").iterdir()} == files
