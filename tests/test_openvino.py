"""The openvino-int8 variant: real exports of MiniLM and a tiny Gemma3 run by OpenVINO's CPU
plugin, through the same Encoder, parity gate and manifest as the onnxruntime variants."""
import csv
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from mimicsearch.export.package import export_model
from mimicsearch.export.parity import Thresholds, sample_texts
from mimicsearch.export.source import load_source

from mimicsearch.cli import main
from mimicsearch.embeddings import EmbeddingsManifest, load_embeddings
from mimicsearch.encoder import Encoder
from mimicsearch.model_manifest import ModelManifest, Runtime

pytest.importorskip("openvino")
pytest.importorskip("nncf")

MODELS = ["minilm", "tiny_gemma"]


@pytest.fixture(scope="module")
def ov_exported(request, tmp_path_factory):
    """(model name) -> (source dir, export dir with fp32, int8 and openvino-int8)."""
    cache = {}

    def get(name):
        if name not in cache:
            src = request.getfixturevalue(f"{name}_dir")
            out = tmp_path_factory.mktemp(f"{name}_ov") / "model"
            result = export_model(src, out, variants=["fp32", "int8", "openvino-int8"],
                                  parity_texts=40, progress=False)
            assert not result.failed, [(v.name, v.reason) for v in result.failed]
            cache[name] = (src, out)
        return cache[name]
    return get


def held_out_texts():
    texts = sample_texts(12, seed=99)
    return texts + ["fever", "Chest pain. " * 200, "ECG: sinus rhythm, rate 72, normal axis."]


@pytest.mark.parametrize("name", MODELS)
def test_openvino_variant_matches_torch_on_unseen_texts(ov_exported, name):
    src, out = ov_exported(name)
    m = ModelManifest.load(out)
    v = m.variant("int8", "openvino")
    assert (v.name, v.file, v.weights_file) == (
        "openvino-int8", "model_openvino_int8.xml", "model_openvino_int8.bin")
    assert v.runtime_config == {"DYNAMIC_QUANTIZATION_GROUP_SIZE": "128"}
    assert v.parity.cosine_min >= 0.99 and v.speed["texts_per_s"] > 0
    texts = held_out_texts()
    want = load_source(src).encode(texts, convert_to_numpy=True, normalize_embeddings=True)
    enc = Encoder(out, runtime="openvino")
    assert enc.runtime is Runtime.OPENVINO
    got = enc.encode(texts, prompt=None)
    assert (got * want).sum(axis=1).min() >= 0.99


@pytest.mark.parametrize("name", MODELS)
def test_export_records_how_far_a_vector_depends_on_its_batch(ov_exported, name):
    """OpenVINO's CPU plugin picks kernels by shape (its dynamic int8 path, bf16 blocking),
    so a note alone and the same note padded in a batch may differ slightly; the export
    measures it for every variant, and what it records is what the Encoder gives."""
    _, out = ov_exported(name)
    m = ModelManifest.load(out)
    texts = held_out_texts()
    for v in m.variants:
        enc = Encoder(out, precision=v.precision.value, runtime=v.runtime.value, max_batch=32)
        batched = enc.encode(texts)
        alone = np.concatenate([enc.encode([t]) for t in texts])
        cosine = float((alone * batched).sum(axis=1).min())
        recorded = v.parity.batch_cosine_min
        assert recorded is not None and cosine >= 0.999 and recorded >= 0.999
        if v.runtime is Runtime.ONNXRUNTIME:  # per-token scales: independent by design
            assert cosine >= 0.99999 and recorded >= 0.99999 and v.parity.batch_independent


def test_default_variant_is_the_fastest_batch_independent_int8(ov_exported, tmp_path):
    _, out = ov_exported("minilm")
    m = json.loads((out / "manifest.json").read_text())
    cases = [("openvino-int8", 1.0, "openvino-int8"), ("int8", 1.0, "int8"),
             ("openvino-int8", 0.9999, "int8")]  # faster, but its vectors follow the batch
    for i, (fast, ov_batch, want) in enumerate(cases):
        copy = tmp_path / str(i)
        shutil.copytree(out, copy)
        for v in m["variants"]:
            name = v["precision"] if v["runtime"] == "onnxruntime" else "openvino-int8"
            v["speed"]["texts_per_s"] = 100.0 if name == fast else 10.0
            v["parity"]["batch_cosine_min"] = ov_batch if name == "openvino-int8" else 1.0
        (copy / "manifest.json").write_text(json.dumps(m))
        assert Encoder(copy).variant.name == want
        assert Encoder(copy, precision="fp32").variant.name == "fp32"
        assert Encoder(copy, runtime="onnxruntime").variant.name == "int8"


def test_openvino_weights_are_checked_against_the_manifest(ov_exported, tmp_path):
    _, out = ov_exported("minilm")
    copy = tmp_path / "m"
    shutil.copytree(out, copy)
    with open(copy / "model_openvino_int8.bin", "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ValueError, match="model_openvino_int8.bin is corrupted"):
        Encoder(copy, runtime="openvino")
    assert Encoder(copy, runtime="onnxruntime").variant.name == "int8"


def test_parity_gate_refuses_an_openvino_variant_under_its_floor(tiny_gemma_dir, tmp_path):
    result = export_model(tiny_gemma_dir, tmp_path / "m", variants=["fp32", "openvino-int8"],
                          thresholds=Thresholds(int8_cosine=0.999999), parity_texts=24,
                          progress=False)
    assert [v.name for v in result.failed] == ["openvino-int8"]
    assert "cosine min" in result.failed[0].reason
    with pytest.raises(ValueError, match="openvino-int8 failed its parity gate"):
        Encoder(tmp_path / "m", runtime="openvino")
    assert Encoder(tmp_path / "m").variant.name == "fp32"


def test_encode_cli_runs_the_openvino_variant(ov_exported, synth_dir, tmp_path):
    _, out = ov_exported("minilm")
    rows = list(csv.reader((synth_dir / "NOTEEVENTS.csv").open(encoding="utf-8", newline="")))
    notes = tmp_path / "notes.csv"
    with open(notes, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows[:41])
    args = ["encode", str(notes), "--model", str(out), "--no-progress", "--json"]
    ov = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "ov"), "--runtime", "openvino"])
    assert ov.exit_code == 0, ov.output
    assert json.loads(ov.output)["encoded"] == 40
    ort = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "ort"),
                                    "--runtime", "onnxruntime", "--precision", "fp32"])
    assert ort.exit_code == 0, ort.output
    (ta, va), (tb, vb) = load_embeddings(tmp_path / "ov"), load_embeddings(tmp_path / "ort")
    assert ta.column("id").to_pylist() == tb.column("id").to_pylist()
    assert (va * vb).sum(axis=1).min() >= 0.99
    recorded = EmbeddingsManifest.load(tmp_path / "ov").settings["options"]["runtime"]
    assert recorded == "openvino"
    bad = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "x"), "--runtime", "tensorrt"])
    assert bad.exit_code == 2 and "tensorrt" in bad.output
