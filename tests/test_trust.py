"""Trust boundaries: no code execution from data files, manifests cannot point outside their
directory, every artifact file is hash-checked before use, and note text stays out of output.
"""
import ast
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from mimicsearch.corpus import encode_corpus
from mimicsearch.embeddings import EmbeddingsManifest, iter_shards
from mimicsearch.encoder import Encoder
from mimicsearch.index import ArraySource, BuildOptions, add_to_index, build_index, open_index
from mimicsearch.index.manifest import IndexManifest
from mimicsearch.model_manifest import ModelManifest
from mimicsearch.options import EncodeOptions

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mimicsearch", "train", "export")
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "shelve", "marshal",
                  "cloudpickle"}
SENTINEL = "ZEBRAQUOKKA"  # note text that must never leak


# --- source scan ---------------------------------------------------------------------------

def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_uses(source: str) -> list[str]:
    """Ways `source` could run code or unpickle objects from a data file."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""]
            found += [f"line {node.lineno}: import {n}" for n in names
                      if n.split(".")[0] in UNSAFE_MODULES]
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
        owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) \
            else ""
        where = f"line {node.lineno}"
        if name in ("eval", "exec") and isinstance(f, ast.Name):
            found.append(f"{where}: {name}()")
        if _is_true(_kw(node, "allow_pickle")):
            found.append(f"{where}: allow_pickle=True")
        if _is_true(_kw(node, "trust_remote_code")):
            found.append(f"{where}: trust_remote_code=True")
        if owner == "torch" and name == "load" and not _is_true(_kw(node, "weights_only")):
            found.append(f"{where}: torch.load without weights_only=True")
        if name in ("read_pickle", "to_pickle") or (owner == "yaml" and name == "load"):
            found.append(f"{where}: {owner}.{name}")
    return found


@pytest.mark.parametrize("snippet", [
    "import pickle", "from joblib import load", "eval(open('f').read())", "exec(s)",
    "np.load(p, allow_pickle=True)", "torch.load(p)", "torch.load(p, weights_only=False)",
    "AutoModel.from_pretrained(p, trust_remote_code=True)", "pd.read_pickle(p)",
    "yaml.load(s)",
])
def test_scanner_flags_unsafe_code(snippet):
    assert unsafe_uses(snippet), snippet


def test_scanner_accepts_safe_code():
    assert unsafe_uses("torch.load(p, weights_only=True)\nnp.load(p)\nm.eval()\n") == []


def test_package_sources_never_unpickle_or_eval():
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    assert len(files) > 20
    bad = {str(p.relative_to(ROOT)): u for p in files if (u := unsafe_uses(p.read_text()))}
    assert bad == {}


# --- artifact dirs ---------------------------------------------------------------------------

WORDS = ["chest", "pain", "fever", "cough", "stable", "improved", "lungs", "clear", "heart",
         "rate", "normal", "patient", "denies", "nausea", "vomiting", "abdomen", "soft"]


def write_notes(path: Path, n: int, secret_rows=()):
    rng = np.random.default_rng(0)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["ROW_ID", "SUBJECT_ID", "CATEGORY", "TEXT"])
        for i in range(1, n + 1):
            text = " ".join(rng.choice(WORDS, 8))
            if i in secret_rows:
                text = f"{SENTINEL} {text}"
            w.writerow([i, 100 + i % 5, "Nursing", text])
    return path


@pytest.fixture(scope="module")
def model_dir(tiny_gemma_onnx):
    return tiny_gemma_onnx


@pytest.fixture(scope="module")
def emb_dir(model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("emb")
    src = write_notes(tmp / "notes.csv", 30)
    encode_corpus(src, model_dir=model_dir, out_dir=tmp / "emb", options=EncodeOptions(precision="fp32"), shard_size=10, progress=False)
    return tmp / "emb"


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    meta = pa.table({"id": np.arange(300, dtype=np.int64),
                     "SUBJECT_ID": [str(i % 7) for i in range(300)]})
    out = tmp_path_factory.mktemp("ix") / "ix"
    build_index(ArraySource(x, meta), out, model_fingerprint="fp",
                options=BuildOptions(index_key="IVF8,Flat", shard_size=150), progress=False)
    return out


def copy_dir(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def manifest_files(kind: str, d: Path) -> list[str]:
    if kind == "model":
        return [v.file for v in ModelManifest.load(d).variants]
    if kind == "embeddings":
        return [s.file for s in EmbeddingsManifest.load(d).shards]
    return [ref.file for ref in IndexManifest.load(d).files()]


def use(kind: str, d: Path, name: str | None = None):
    """Load the artifact the way the product does before trusting it (for a model, the
    variant stored in `name`)."""
    if kind == "model":
        variants = ModelManifest.load(d).variants
        return Encoder(d, precision=next((v.precision for v in variants if v.file == name),
                                         "fp32"))
    if kind == "embeddings":
        return list(iter_shards(d))
    if name is not None and name == IndexManifest.load(d).trained.file:
        # Only `add` (into a new shard) and `merge` read the trained empty index.
        rng = np.random.default_rng(2)
        x = rng.standard_normal((3, 16)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        meta = pa.table({"id": np.arange(10_000, 10_003, dtype=np.int64),
                         "SUBJECT_ID": ["1", "2", "3"]})
        return add_to_index(x, meta, index_dir=d)
    m = IndexManifest.load(d)
    if name is not None and m.patients is not None and name == m.patients.file:
        from mimicsearch.patients import pool  # read on the first patient search

        return pool(open_index(d), None)
    return open_index(d)


def load_manifest(kind: str, d: Path):
    return {"model": ModelManifest, "embeddings": EmbeddingsManifest,
            "index": IndexManifest}[kind].load(d)


def replace_first_file(data: dict, old: str, new: str) -> dict:
    """The manifest with its first reference to `old` pointing at `new` instead."""
    text = json.dumps(data)
    assert f'"{old}"' in text
    return json.loads(text.replace(f'"{old}"', json.dumps(new), 1))


@pytest.fixture
def artifact(request, model_dir, emb_dir, index_dir, tmp_path):
    kind = request.param
    src = {"model": model_dir, "embeddings": emb_dir, "index": index_dir}[kind]
    return kind, copy_dir(src, tmp_path / kind)


KINDS = ["model", "embeddings", "index"]


@pytest.mark.parametrize("artifact", KINDS, indirect=True)
@pytest.mark.parametrize("escape", ["../outside.bin", "/etc/passwd", "a/../../outside.bin",
                                    "symlink"])
def test_manifest_paths_cannot_escape_their_directory(artifact, escape, tmp_path):
    kind, d = artifact
    name = manifest_files(kind, d)[0]
    outside = tmp_path / "outside.bin"
    shutil.copy(d / name, outside)  # the same bytes: only the path is wrong
    if escape == "symlink":
        (d / "link.bin").symlink_to(outside)
        escape = "link.bin"
    manifest = d / "manifest.json"
    manifest.write_text(json.dumps(replace_first_file(json.loads(manifest.read_text()),
                                                      name, escape)))
    with pytest.raises(ValueError, match="escapes its directory"):
        load_manifest(kind, d)
    with pytest.raises(ValueError, match="escapes its directory"):
        use(kind, d, name)


def _flip(path: Path, where: float):
    data = bytearray(path.read_bytes())
    data[int(where * (len(data) - 1))] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("artifact", KINDS, indirect=True)
@pytest.mark.parametrize("damage", ["flip-start", "flip-middle", "flip-end", "truncate", "empty"])
def test_every_damaged_artifact_file_is_refused(artifact, damage):
    """Each file the manifest lists, damaged in turn, is refused before faiss/ORT parse it."""
    kind, d = artifact
    names = manifest_files(kind, d)
    assert names
    for name in names:
        path = d / name
        good = path.read_bytes()
        if damage == "truncate":
            path.write_bytes(good[: len(good) * 2 // 3])
        elif damage == "empty":
            path.write_bytes(b"")
        else:
            _flip(path, {"flip-start": 0.0, "flip-middle": 0.5, "flip-end": 1.0}[damage])
        with pytest.raises(ValueError, match=r"corrupted|truncated|size") as e:
            use(kind, d, name)
        assert path.name in str(e.value)
        path.write_bytes(good)
    use(kind, d)  # restored: usable again, so the refusals were about the damage


def test_edited_tokenizer_is_refused(model_dir, tmp_path):
    d = copy_dir(model_dir, tmp_path / "m")
    tok = d / ModelManifest.load(d).tokenizer_file
    data = json.loads(tok.read_text())
    vocab = data["model"]["vocab"]
    if isinstance(vocab, dict):
        a, b = list(vocab)[100:102]
        vocab[a], vocab[b] = vocab[b], vocab[a]
    else:
        vocab[100], vocab[101] = vocab[101], vocab[100]
    tok.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="corrupted|modified"):
        Encoder(d, precision="fp32")


# --- privacy -------------------------------------------------------------------------------

def _encode_cli(src, model, out, *extra):
    return subprocess.run(
        [sys.executable, "-c", "from mimicsearch.cli import main; main()", "-vv", "encode",
         str(src), "--model", str(model), "--out", str(out), "--precision", "fp32",
         "--shard-size", "7", "--batch-size", "5", *extra],
        check=False, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})


def test_note_text_stays_out_of_output_and_rejects_unless_asked(model_dir, tmp_path):
    """Accepted, duplicate and bad-id notes all carry the sentinel; none reaches the terminal."""
    src = write_notes(tmp_path / "notes.csv", 20, secret_rows=range(1, 21))
    with open(src, "a", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([3, 1, "Nursing", f"{SENTINEL} duplicate"])
        w.writerow(["x9", 1, "Nursing", f"{SENTINEL} bad id"])
        w.writerow([99, 1, "Nursing", f"{SENTINEL} " + "long " * 3000])
    for show in (False, True):
        out = tmp_path / f"out-{show}"
        r = _encode_cli(src, model_dir, out, *(["--show-text"] if show else []))
        assert r.returncode == 0, r.stderr[-2000:]
        assert "read 23 rows: 21 encoded, 2 rejected" in r.stdout
        assert r.stderr.strip()  # -vv and the progress bar did write something
        assert SENTINEL not in r.stdout + r.stderr
        with open(out / "rejects.csv", newline="", encoding="utf-8") as f:
            rejects = list(csv.DictReader(f))
        assert len(rejects) == 2 and all(x["line"] and x["reason"] for x in rejects)
        assert (SENTINEL in (out / "rejects.csv").read_text()) is show
        for p in out.iterdir():  # nothing else in the embeddings dir holds note text
            if p.name != "rejects.csv":
                assert SENTINEL.encode() not in p.read_bytes(), p.name


def test_malformed_input_error_names_line_not_text(model_dir, tmp_path):
    src = tmp_path / "bad.csv"
    src.write_text(f'ROW_ID,TEXT\n1,"{SENTINEL} fine"\n2,"{SENTINEL} unclosed\n3,x\n')
    r = _encode_cli(src, model_dir, tmp_path / "o")
    assert r.returncode == 1
    assert "bad.csv: record starting at line 3" in r.stderr
    assert SENTINEL not in r.stdout + r.stderr


# --- resources -----------------------------------------------------------------------------

RSS_SCRIPT = """
import csv, json, resource, sys
from mimicsearch.corpus import encode_corpus
from mimicsearch.options import EncodeOptions
src, model, out, rows, big, long = sys.argv[1:7]
with open(src, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["ROW_ID", "TEXT"])
    for i in range(1, int(rows) + 1):
        w.writerow([i, f"patient {i} stable, denies chest pain and fever"])
    if int(big):
        w.writerow([0, ("the patient denies chest pain and fever " * 30000)[:int(big)]])
s = encode_corpus(src, model_dir=model, out_dir=out, options=EncodeOptions(long=long, precision="fp32"), progress=False, shard_size=5000, batch_size=256)
print(json.dumps({"encoded": s.encoded, "truncated": s.truncated,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _peak_rss(tmp_path, model_dir, rows, big=0, long="truncate") -> dict:
    out = tmp_path / f"o-{rows}-{big}-{long}"
    r = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(out) + ".csv", str(model_dir),
                        str(out), str(rows), str(big), long],
                       check=True, capture_output=True, text=True)
    got = json.loads(r.stdout)
    assert got["encoded"] == rows + (1 if big else 0)
    return got


def test_memory_does_not_grow_with_corpus_size(model_dir, tmp_path):
    """Streaming all the way: 20x the rows, the same peak memory (measured +6 MB)."""
    small = _peak_rss(tmp_path, model_dir, 1500)
    large = _peak_rss(tmp_path, model_dir, 30000)
    assert large["rss_mb"] < small["rss_mb"] + 60, (small, large)


@pytest.mark.parametrize("long", ["truncate", "chunk"])
def test_a_1mb_note_is_bounded(model_dir, tmp_path, long):
    """A 1 MB note costs its tokenization, not a blow-up (measured +90 MB truncate, +170
    MB chunk with the tiny model)."""
    base = _peak_rss(tmp_path, model_dir, 20, 0, long)
    big = _peak_rss(tmp_path, model_dir, 20, 1_000_000, long)
    assert big["truncated"] == 1
    assert big["rss_mb"] < base["rss_mb"] + 400, (base, big)
