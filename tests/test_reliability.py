"""Reliability round two: every repro of a hostile user, run as written. Each gives a clear
error or the right result and leaves every file that was there before in place."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from mimicsearch.cli import main
from mimicsearch.index import open_index

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def tree(root: Path) -> dict[str, str]:
    """Every file under root with its sha256: what 'nothing was touched' compares."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def no_traceback(r) -> None:
    assert "Traceback" not in r.output and r.exception is None or isinstance(
        r.exception, SystemExit), r.output


@pytest.fixture(scope="module")
def notes(synth_dir, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rel") / "notes.csv"
    pd.read_csv(synth_dir / "NOTEEVENTS.csv", nrows=40).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def built(notes, minilm_onnx, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rel") / "ix"
    r = run("build-index", notes, "--model", minilm_onnx, "--out", out, "--no-progress",
            "--index-key", "Flat")
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture
def index(built, tmp_path) -> Path:
    shutil.copytree(built, tmp_path / "ix")
    return tmp_path / "ix"


def test_export_onto_an_index_is_refused_and_the_index_kept(index, minilm_dir):
    before = tree(index)
    r = run("export", minilm_dir, "--out", index, "--no-progress")
    assert r.exit_code == 1 and "not a model export" in r.output and "mimicsearch-index" in r.output
    no_traceback(r)
    assert tree(index) == before
    assert run("info", index).exit_code == 0


def test_export_into_a_directory_of_other_files_is_refused(tmp_path, minilm_dir):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model_int8.onnx").write_text("mine")
    r = run("export", minilm_dir, "--out", tmp_path / "out", "--no-progress")
    assert r.exit_code == 1 and "model_int8.onnx" in r.output
    assert (tmp_path / "out" / "model_int8.onnx").read_text() == "mine"


@pytest.mark.parametrize("files", [
    ["shard-mine.faiss", "trained-model.faiss", ".backup.tmp.1", "store/part-mine.parquet"],
    ["embeddings/shard-00007.parquet", "embeddings/rejects.csv"],
    ["notes.txt"],
])
def test_build_index_never_deletes_a_users_files(tmp_path, notes, minilm_onnx, files):
    out = tmp_path / "out"
    for name in files:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(f"the user's {name}")
    before = tree(out)
    r = run("build-index", notes, "--model", minilm_onnx, "--out", out, "--no-progress")
    assert r.exit_code == 1 and "did not write" in r.output
    assert Path(files[0]).name in r.output
    no_traceback(r)
    assert {k: v for k, v in tree(out).items() if not k.endswith(".lock")} == before


def test_an_unfinished_build_refuses_changes_and_says_so(index, notes, minilm_onnx):
    """What kill -9 between build-index's first manifest and its tuning leaves behind."""
    path = index / "manifest.json"
    d = json.loads(path.read_text())
    path.write_text(json.dumps({**d, "quality": None, "search_params": {}}))
    r = run("remove", index, "--ids", "5")
    assert r.exit_code == 1 and "interrupted before it tuned" in r.output
    r = run("info", index)
    assert r.exit_code == 0 and "warning: build-index was interrupted" in r.output
    r = run("query", index, "--note-id", "3")
    assert r.exit_code == 0 and "warning: build-index was interrupted" in r.output
    r = run("build-index", notes, "--model", minilm_onnx, "--out", index, "--no-progress",
            "--index-key", "Flat")
    assert r.exit_code == 0, r.output  # the documented recovery finishes it
    assert run("remove", index, "--ids", "5").exit_code == 0
    assert 5 not in open_index(index).store.ids().to_pylist()


def test_k_is_capped_at_what_the_index_holds(index):
    r = run("query", index, "--note-id", "3", "-k", "1000000000")
    assert r.exit_code == 2 and "1000000000" in r.output  # above the documented maximum
    r = run("query", index, "--note-id", "3", "-k", "10000", "--json")
    assert r.exit_code == 0 and len(json.loads(r.stdout)[0]["hits"]) == 39


def test_a_failed_build_can_be_retried_with_other_input(tmp_path, notes, minilm_onnx):
    empty = tmp_path / "empty.csv"
    df = pd.read_csv(notes, nrows=3)
    df["TEXT"] = "   "
    df.to_csv(empty, index=False)
    out = tmp_path / "out"
    r = run("build-index", empty, "--model", minilm_onnx, "--out", out, "--no-progress")
    assert r.exit_code == 1
    as_text = tmp_path / "notes.txt"  # a name that does not tell the format
    shutil.copy(notes, as_text)
    r = run("build-index", as_text, "--model", minilm_onnx, "--out", out, "--no-progress")
    assert r.exit_code == 1 and "pass --format" in r.output
    r = run("build-index", as_text, "--format", "csv", "--model", minilm_onnx, "--out", out,
            "--no-progress")
    assert r.exit_code == 0, r.output
    assert "40 added; 40 live notes" in r.output


def test_windows_give_k_distinct_notes(tmp_path, notes, minilm_onnx):
    df = pd.read_csv(notes, nrows=31)
    df.loc[0, "TEXT"] = " ".join(["bilateral pleural effusions on furosemide"] * 600)
    src = tmp_path / "long.csv"
    df.to_csv(src, index=False)
    out = tmp_path / "w"
    r = run("build-index", src, "--model", minilm_onnx, "--out", out, "--long", "windows",
            "--no-progress", "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["live_notes"] == 31 and s["rows"] > 100  # rows are windows, notes are notes
    for k in (3, 10, 30):
        r = run("query", out, "pleural effusions", "-k", k, "--json")
        hits = json.loads(r.stdout)[0]["hits"]
        assert len(hits) == k and len({h["id"] for h in hits}) == k


def test_jsonl_columns_come_from_every_object(tmp_path, minilm_onnx):
    lines = ["", json.dumps({"ROW_ID": 1, "TEXT": "chest pain"}),
             json.dumps({"ROW_ID": 2, "TEXT": "sinus rhythm", "CATEGORY": "ECG"}),
             json.dumps({"ROW_ID": 3, "SUBJECT_ID": 7, "TEXT": "no acute process"})]
    src = tmp_path / "n.jsonl"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "ix"
    r = run("build-index", src, "--model", minilm_onnx, "--out", out, "--no-progress")
    assert r.exit_code == 0, r.output
    store = open_index(out).store
    assert set(store.metadata_columns) == {"CATEGORY", "SUBJECT_ID"}
    assert [r["CATEGORY"] for r in store.records([0, 1, 2])] == [None, "ECG", None]
    assert store.records([2])[0]["SUBJECT_ID"] == 7


def test_inputs_that_used_to_end_in_a_traceback(tmp_path, index, notes, minilm_onnx):
    out = tmp_path / "out"
    cases = []
    (tmp_path / "fake.csv.gz").write_bytes(b"not gzip at all")
    cases.append((["build-index", tmp_path / "fake.csv.gz"], "not a complete gzip file"))
    (tmp_path / "cut.csv.gz").write_bytes(gzip.compress(notes.read_bytes())[:2000])
    cases.append((["build-index", tmp_path / "cut.csv.gz"], "not a complete gzip file"))
    os.mkfifo(tmp_path / "fifo.csv")
    cases.append((["build-index", tmp_path / "fifo.csv"], "not a regular file"))
    cases.append((["build-index", notes, "--index-key", "Flat", "--merge-on-disk"],
                  "only IVF indexes can be merged on disk"))
    for args, message in cases:
        r = run(*args, "--model", minilm_onnx, "--out", out, "--no-progress")
        assert r.exit_code == 1 and message in r.output, (args, r.output)
        no_traceback(r)
        assert not out.exists()  # a refused build leaves no empty directory behind
    r = run("build-index", notes, "--index-key", "IVF256,Flat", "--model", minilm_onnx,
            "--out", out, "--no-progress")
    assert r.exit_code == 1 and "faiss cannot train 'IVF256,Flat' on 40 vectors" in r.output
    no_traceback(r)
    assert not (out / "manifest.json").exists()  # the encoded notes stay, for the retry:
    r = run("build-index", notes, "--model", minilm_onnx, "--out", out, "--no-progress")
    assert r.exit_code == 0 and "40 added" in r.output
    (tmp_path / "ids.txt").write_bytes(b"\xff\xfe1\n")
    for args, message in [
        (["query", index, "\udcff\udcfe"], "not valid UTF-8"),
        (["query", index, "   "], "empty"),
        (["query", index, "--note-id", "99999999999999999999999"], "outside int64"),
        (["remove", index, "--ids", "99999999999999999999999"], "outside int64"),
        (["remove", index, "--ids-file", tmp_path / "ids.txt"], "not UTF-8 text"),
    ]:
        r = run(*args)
        assert r.exit_code == 1 and message in r.output, (args, r.output)
        no_traceback(r)


@pytest.mark.parametrize(("field", "value"), [("shards", "x"), ("rows", [1]),
                                              ("build", 3), ("deleted", {"file": 1})])
def test_wrong_json_types_in_a_manifest_are_errors(index, field, value):
    path = index / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), field: value}))
    for args in (["info", index], ["query", index, "--note-id", "3"], ["remove", index,
                                                                       "--ids", "3"]):
        r = run(*args)
        assert r.exit_code == 1 and "manifest.json" in r.output, (args, r.output)
        no_traceback(r)


def test_an_embeddings_shard_missing_a_column_is_an_error(built, tmp_path):
    import pyarrow.parquet as pq

    from mimicsearch.embeddings import EmbeddingsManifest, EmbeddingsShard
    from mimicsearch.fileio import sha256_file

    emb = tmp_path / "emb"
    shutil.copytree(built / "embeddings", emb)
    m = EmbeddingsManifest.load(emb)
    shard = emb / m.shards[0].file
    pq.write_table(pq.read_table(shard).drop_columns(["embedding"]), shard)
    s = m.shards[0]
    m.replace(shards=(EmbeddingsShard(s.file, s.rows, sha256_file(shard), s.records_through,
                                      s.rejected, s.truncated, s.snippets,
                                      s.snippets_sha256),)).save(emb)
    r = run("build-index", emb, "--out", tmp_path / "ix", "--no-progress")
    assert r.exit_code == 1 and "not an embeddings shard" in r.output
    no_traceback(r)


def _limited(limit_bytes: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return apply


def test_a_file_size_limit_mid_write_is_an_error_and_the_index_is_intact(index, notes,
                                                                        tmp_path):
    more = tmp_path / "more.csv"
    df = pd.read_csv(notes)
    df["ROW_ID"] += 10_000
    df.to_csv(more, index=False)
    before = open_index(index).store.ids().to_pylist()
    proc = subprocess.run(
        [sys.executable, "-m", "mimicsearch", "add", str(index), str(more), "--no-progress"],
        env=ENV, capture_output=True, text=True, preexec_fn=_limited(20_000), check=False)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "File too large" in proc.stderr
    assert open_index(index).store.ids().to_pylist() == before  # verified, unchanged
    proc = subprocess.run([sys.executable, "-m", "mimicsearch", "add", str(index), str(more),
                           "--no-progress"], env=ENV, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr  # without the limit the same add succeeds


@pytest.mark.parametrize(("field", "value"), [("padding_side", "left"), ("max_seq_length", 64),
                                              ("pad_token_id", 7),
                                              ("prompts", {"query": "query: "})])
def test_an_edited_model_manifest_is_refused(minilm_onnx, tmp_path, field, value):
    from mimicsearch.encoder import Encoder

    model = tmp_path / "m"
    shutil.copytree(minilm_onnx, model)
    path = model / "manifest.json"
    d = json.loads(path.read_text())
    assert d["settings_sha256"]  # export records it
    Encoder(model)  # as exported: loads
    path.write_text(json.dumps({**d, field: value}))
    with pytest.raises(ValueError, match="the manifest was edited; re-export"):
        Encoder(model)


def test_the_largest_k_fits_in_a_small_memory_limit(index):
    """k is capped by what the index holds: -k 10000 on 40 notes allocates for 40."""
    script = ("import resource, sys\n"
              "resource.setrlimit(resource.RLIMIT_AS, (1 << 31, 1 << 31))\n"
              "from mimicsearch.cli import main\n"
              "main(['query', sys.argv[1], '--note-id', '3', '-k', '10000', '--json'])\n")
    proc = subprocess.run([sys.executable, "-c", script, str(index)], env=ENV,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)[0]["hits"]) == 39


def test_readers_see_the_old_or_the_new_index_during_add_remove_and_sync(index, notes,
                                                                       tmp_path):
    """A reader opening and querying the index in a loop while another process adds,
    removes and syncs: every open and every search succeeds, on one whole state."""
    import time

    from mimicsearch.search import Searcher

    df = pd.read_csv(notes)
    more, snapshot = tmp_path / "more.csv", tmp_path / "snapshot.csv"
    extra = df.copy()
    extra["ROW_ID"] += 10_000
    extra.to_csv(more, index=False)
    edited = pd.concat([df, extra])
    edited.loc[edited.ROW_ID == 3, "TEXT"] += " Addendum."
    edited[edited.ROW_ID != 4].to_csv(snapshot, index=False)
    script = ("import subprocess, sys\n"
              "cli = [sys.executable, '-m', 'mimicsearch']\n"
              "ix, more, snap = sys.argv[1:]\n"
              "for args in (['remove', ix, '--ids', '1,2'], ['add', ix, more, '--no-progress'],"
              " ['sync', ix, snap, '--remove-missing', '--no-progress'],"
              " ['remove', ix, '--ids', '10005']):\n"
              "    subprocess.run(cli + args, check=True, capture_output=True)\n")
    writer = subprocess.Popen([sys.executable, "-c", script, str(index), str(more),
                               str(snapshot)], env=ENV)
    opened = searched = 0
    t0 = time.monotonic()
    while writer.poll() is None and time.monotonic() - t0 < 120:
        s = Searcher(index)  # opens (and verifies) whatever state is current
        opened += 1
        ids = s.ids()
        vec = s.index.reconstruct(s.index.store.rows_of(ids[:2])[0])
        hits = s.search_vectors(vec, k=5)
        assert all(len(h) == 5 for h in hits)
        searched += 1
    assert writer.wait() == 0 and opened > 3 and searched == opened
    final = Searcher(index).ids()
    assert not {4, 10005} & set(final) and len(final) == 78
    assert {1, 2} <= set(final)  # removed, then back: the snapshot holds them


def _read_only_run(args: list[str]) -> subprocess.CompletedProcess:
    """Run the CLI as root without the capabilities that let root write through file
    permissions, so a read-only directory is read-only for it too."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is needed to drop root's override of permissions")
    return subprocess.run(
        [setpriv, "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--inh-caps",
         "-all", "--", sys.executable, "-m", "mimicsearch", *map(str, args)],
        env=ENV, capture_output=True, text=True, check=False)


def test_a_read_only_index_is_an_error_and_stays_intact(index, notes, tmp_path):
    more = tmp_path / "more.csv"
    df = pd.read_csv(notes)
    df["ROW_ID"] += 10_000
    df.to_csv(more, index=False)
    (index / ".lock").touch()
    before = tree(index)
    for p in [index, *index.rglob("*")]:
        if p.name != ".lock":  # the lock stays writable: the data files are what is tested
            p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        for args in (["remove", index, "--ids", "3"], ["add", index, more, "--no-progress"],
                     ["sync", index, more, "--no-progress"]):
            proc = _read_only_run(args)
            assert proc.returncode == 1, (args, proc.stderr)
            assert "Permission denied" in proc.stderr and "Traceback" not in proc.stderr
    finally:
        for p in [index, *index.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
    assert tree(index) == before
    assert open_index(index).store.ids().to_pylist() == pd.read_csv(notes).ROW_ID.tolist()


def test_search_params_of_the_wrong_type_are_an_error(index):
    """Found by the CLI fuzz test at soak size: {"": null} reached faiss's parameter space."""
    path = index / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "search_params": {"": None}}))
    r = run("query", index, "--note-id", "3")
    assert r.exit_code == 1 and "manifest.json" in r.output
    no_traceback(r)
