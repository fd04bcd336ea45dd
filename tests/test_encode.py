"""encode_corpus and `mimicsearch encode`: accounting, the embeddings dir, resume after kill -9."""
import csv
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from fixtures.models import TINY_GEMMA_WORDS

from mimicsearch.cli import main
from mimicsearch.corpus import encode_corpus
from mimicsearch.embeddings import EmbeddingsManifest, iter_shards, load_embeddings
from mimicsearch.encoder import Encoder
from mimicsearch.options import EncodeOptions

WORDS = [w for w in TINY_GEMMA_WORDS if w.isalpha()]
HEADER = ["ROW_ID", "SUBJECT_ID", "HADM_ID", "CHARTDATE", "CATEGORY", "TEXT"]


def write_corpus(path, n, seed=0, hostile=True, long_every=0):
    """A NOTEEVENTS-like CSV; every 50th row is bad in some way when `hostile`."""
    rng = random.Random(seed)
    bad = {}
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for i in range(1, n + 1):
            k = rng.randint(150, 200) if long_every and i % long_every == 0 else rng.randint(2, 30)
            text = "\n".join(" ".join(rng.choices(WORDS, k=k)).split(" and "))
            row_id = i
            if hostile and i % 50 == 7:
                text, bad[i] = "", "empty text"
            elif hostile and i % 50 == 19:
                row_id, bad[i] = f"id{i}", "bad id: not an integer"
            elif hostile and i % 50 == 31:
                row_id, bad[i] = i - 1, "duplicate id"
            w.writerow([row_id, 1000 + i % 13, "" if i % 3 else 5000 + i, "2150-01-02",
                        "Nursing", text])
    return bad


@pytest.fixture(scope="module")
def gemma(tiny_gemma_onnx):
    return Encoder(tiny_gemma_onnx, precision="fp32")


def test_encode_accounts_for_every_row(tmp_path, gemma, tiny_gemma_onnx):
    src = tmp_path / "NOTEEVENTS.csv"
    bad = write_corpus(src, 260)
    out = tmp_path / "emb"
    s = encode_corpus(src, model_dir=tiny_gemma_onnx, out_dir=out, shard_size=100, batch_size=64, progress=False, encoder=gemma)
    assert s.read == 260 == s.encoded + s.rejected
    assert s.rejected == len(bad) and s.rows_written == s.encoded
    assert s.shards == 3  # closed after the block that reaches 100 rows

    with open(out / "rejects.csv", newline="") as f:
        rejects = list(csv.DictReader(f))
    assert [r["reason"].split(" (")[0] for r in rejects] == list(bad.values())
    assert "text" not in rejects[0]

    m = EmbeddingsManifest.load(out)
    assert m.complete and m.rows == s.encoded and m.dim == 32
    assert m.model_fingerprint == gemma.fingerprint
    assert EmbeddingsManifest.from_dict(json.loads(json.dumps(m.to_dict()))) == m
    assert m.columns == ("id", "line", "SUBJECT_ID", "HADM_ID", "CATEGORY", "CHARTDATE",
                         "text_hash")

    table, vectors = load_embeddings(out)
    assert vectors.dtype == np.float32 and vectors.shape == (s.encoded, 32)
    schema = pq.read_schema(out / m.shards[0].file)
    assert schema.field("embedding").type == pa.list_(pa.float32(), 32)
    ids = table.column("id").to_pylist()
    assert len(set(ids)) == len(ids) and ids == sorted(ids)
    with open(src, newline="") as f:
        rows = {}
        for r in csv.DictReader(f):  # the first of duplicate ids is the one encoded
            if r["ROW_ID"].isdigit():
                rows.setdefault(int(r["ROW_ID"]), r)
    texts = [rows[i]["TEXT"] for i in ids]
    np.testing.assert_allclose(vectors, gemma.encode(texts), atol=1e-6)
    assert table.column("SUBJECT_ID").to_pylist()[:2] == [rows[ids[0]]["SUBJECT_ID"],
                                                          rows[ids[1]]["SUBJECT_ID"]]
    # `line` points at the row in the source file.
    lines = src.read_text().split("\n")
    assert all(lines[ln - 1].startswith(f"{i},") for i, ln in
               zip(ids[:20], table.column("line").to_pylist()[:20]))


def test_windows_mode_and_npy(tmp_path, gemma, tiny_gemma_onnx):
    src = tmp_path / "notes.csv"
    write_corpus(src, 40, hostile=False, long_every=10)
    out = tmp_path / "emb"
    s = encode_corpus(src, model_dir=tiny_gemma_onnx, out_dir=out, options=EncodeOptions(long="windows", keep=[]), npy=True, progress=False, encoder=gemma)
    assert s.truncated == 4 and s.rows_written > s.encoded == 40
    table, vectors = load_embeddings(out)
    assert table.column_names == ["id", "line", "window", "text_hash"]
    ids, windows = table.column("id").to_pylist(), table.column("window").to_pylist()
    assert sorted(set(ids)) == list(range(1, 41))
    assert max(w for i, w in zip(ids, windows) if i == 10) >= 2
    np.testing.assert_array_equal(np.load(out / "embeddings.npy"), vectors)


def test_other_arguments_on_the_same_out_are_refused(tmp_path, gemma, tiny_gemma_onnx):
    src = tmp_path / "notes.csv"
    write_corpus(src, 20, hostile=False)
    out = tmp_path / "emb"
    encode_corpus(src, model_dir=tiny_gemma_onnx, out_dir=out, progress=False, encoder=gemma)
    with pytest.raises(ValueError, match=r"differs in \['long'\].*--overwrite"):
        encode_corpus(src, model_dir=tiny_gemma_onnx, out_dir=out, options=EncodeOptions(long="chunk"), progress=False, encoder=gemma)
    s = encode_corpus(src, model_dir=tiny_gemma_onnx, out_dir=out, options=EncodeOptions(long="chunk"), overwrite=True, progress=False, encoder=gemma)
    assert s.encoded == 20 and EmbeddingsManifest.load(out).long == "chunk"


def test_corrupted_shard_is_refused_on_read(tmp_path, gemma, tiny_gemma_onnx):
    src = tmp_path / "notes.csv"
    write_corpus(src, 20, hostile=False)
    out = tmp_path / "emb"
    encode_corpus(src, model_dir=tiny_gemma_onnx, out_dir=out, progress=False, encoder=gemma)
    shard = out / "shard-00000.parquet"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(ValueError, match="corrupted"):
        next(iter_shards(out))


def _cli_encode(src, model, out):
    return [sys.executable, "-c", "from mimicsearch.cli import main; main()", "encode", str(src),
            "--model", str(model), "--out", str(out), "--precision", "fp32",
            "--shard-size", "150", "--batch-size", "50", "--no-progress", "--json"]


def test_resume_after_kill_9_gives_identical_files(tmp_path, tiny_gemma_onnx):
    src = tmp_path / "notes.csv"
    write_corpus(src, 3000, seed=1)
    full, killed = tmp_path / "full", tmp_path / "killed"
    proc = subprocess.Popen(_cli_encode(src, tiny_gemma_onnx, killed))
    manifest = killed / "manifest.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if manifest.is_file() and len(json.loads(manifest.read_text())["shards"]) >= 2:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    before = EmbeddingsManifest.load(killed)
    assert not before.complete and len(before.shards) >= 2

    resumed = subprocess.run(_cli_encode(src, tiny_gemma_onnx, killed), check=True,
                             capture_output=True, text=True)
    summary = json.loads(resumed.stdout)
    assert summary["resumed_at"] >= before.shards[-1].records_through > 0
    subprocess.run(_cli_encode(src, tiny_gemma_onnx, full), check=True, capture_output=True)

    a, b = EmbeddingsManifest.load(full), EmbeddingsManifest.load(killed)
    assert a.complete and b.complete
    assert [s.sha256 for s in a.shards] == [s.sha256 for s in b.shards]
    assert (full / "rejects.csv").read_bytes() == (killed / "rejects.csv").read_bytes()
    (ta, va), (tb, vb) = load_embeddings(full), load_embeddings(killed)
    assert va.tobytes() == vb.tobytes() and ta.equals(tb)
    assert summary["read"] == 3000 == summary["encoded"] + summary["rejected"]
    # no temporaries left; .lock is the writer lock every writer keeps in its directory
    assert not [p.name for p in killed.iterdir() if p.name.startswith(".") and p.name != ".lock"]


def test_cli_summary_and_malformed_csv_message(tmp_path, tiny_gemma_onnx):
    src = tmp_path / "notes.csv"
    write_corpus(src, 12, hostile=False)
    result = CliRunner().invoke(main, ["encode", str(src), "--model", str(tiny_gemma_onnx),
                                       "--out", str(tmp_path / "o"), "--json", "--no-progress"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert {k: summary[k] for k in ("read", "encoded", "rejected", "truncated")} == \
        {"read": 12, "encoded": 12, "rejected": 0, "truncated": 0}

    bad = tmp_path / "bad.csv"
    bad.write_text('ROW_ID,TEXT\n1,"fine"\n2,"unclosed\n3,"x"\n')
    result = CliRunner().invoke(main, ["encode", str(bad), "--model", str(tiny_gemma_onnx),
                                       "--out", str(tmp_path / "o2"), "--no-progress"])
    assert result.exit_code == 1
    assert "bad.csv: record starting at line 3" in result.output
    assert "Traceback" not in result.output
