"""Export stage: real exports of MiniLM and a tiny Gemma3, run with plain onnxruntime and
compared with PyTorch sentence-transformers."""
import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from mimicsearch.export.package import export_model
from mimicsearch.export.parity import Thresholds, sample_texts, topk_overlap
from mimicsearch.export.source import hash_model_dir, load_source
from mimicsearch.export.tokenizer import build_tokenizer, check_tokenizer
from tokenizers import Tokenizer

from mimicsearch.cli import main
from mimicsearch.model_manifest import ModelManifest, Precision, verify_file

MODELS = ["minilm", "tiny_gemma"]
# Floors for texts the parity gate never saw (the gate's own thresholds).
COSINE_FLOOR = {Precision.FP32: 0.9999, Precision.INT8: 0.99}


@pytest.fixture(scope="module")
def exported(request):
    """(model name) -> (torch model, exported dir), loaded once per module."""
    cache = {}

    def get(name):
        if name not in cache:
            src = request.getfixturevalue(f"{name}_dir")
            cache[name] = (load_source(src), request.getfixturevalue(f"{name}_onnx"))
        return cache[name]
    return get


def held_out_texts():
    """Texts unlike the parity sample: other seed, very short, very long (truncated)."""
    texts = sample_texts(12, seed=99)
    return texts + ["fever", "Chest pain. " * 200, "ECG: sinus rhythm, rate 72, normal axis."]


def onnx_encode(model_dir, precision, texts, prompt=""):
    m = ModelManifest.load(model_dir)
    v = m.variant(precision)
    session = ort.InferenceSession(str(verify_file(model_dir, v.file, v.sha256)),
                                   providers=["CPUExecutionProvider"])
    tok = Tokenizer.from_file(str(model_dir / m.tokenizer_file))
    enc = tok.encode_batch([prompt + t for t in texts])
    feed = {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64)}
    return session.run([m.output_name], feed)[0]


def torch_encode(model, texts, prompt=""):
    return model.encode(texts, prompt=prompt or None, convert_to_numpy=True,
                        normalize_embeddings=True)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("precision", [Precision.FP32, Precision.INT8])
def test_variant_matches_pytorch_on_held_out_texts(exported, name, precision):
    model, onnx_dir = exported(name)
    texts = held_out_texts()
    prompt = model.prompts.get("document", "")
    got = onnx_encode(onnx_dir, precision, texts, prompt)  # one batch: 15 x longest
    want = torch_encode(model, texts, prompt)
    assert got.shape == want.shape
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
    cosine = (got * want).sum(axis=1)
    assert cosine.min() >= COSINE_FLOOR[precision], cosine
    if precision is Precision.INT8:
        assert not np.allclose(got, want, atol=1e-6), "int8 identical to fp32: not quantized?"


@pytest.mark.parametrize("name", MODELS)
def test_batch_and_length_do_not_change_a_text_vector(exported, name):
    """The graph was traced at one shape; every other batch size and length must agree."""
    _, onnx_dir = exported(name)
    texts = held_out_texts()
    batched = onnx_encode(onnx_dir, Precision.FP32, texts)
    for i in (0, 12, 13):
        alone = onnx_encode(onnx_dir, Precision.FP32, [texts[i]])
        np.testing.assert_allclose(alone[0], batched[i], atol=2e-5)


@pytest.mark.parametrize("name", MODELS)
def test_int8_vector_does_not_depend_on_its_batch(exported, name):
    """Per-token activation scales: a note encoded alone, beside other notes, or padded to a
    long neighbour gets the same vector, so re-encoding a corpus reproduces it."""
    _, onnx_dir = exported(name)
    texts = held_out_texts()
    batched = onnx_encode(onnx_dir, Precision.INT8, texts)          # padded to the longest
    reversed_ = onnx_encode(onnx_dir, Precision.INT8, texts[::-1])[::-1]
    alone = np.concatenate([onnx_encode(onnx_dir, Precision.INT8, [t]) for t in texts])
    for other in (batched, reversed_):
        cosine = (alone * other).sum(axis=1)
        assert cosine.min() >= 0.99999, cosine
    recipe = ModelManifest.load(onnx_dir).variant(Precision.INT8).recipe
    assert recipe["activations"] == "per-token"
    assert not any("down_proj" in k or "output/dense" in k for k in recipe["kept_fp32"])


@pytest.mark.parametrize("name", MODELS)
def test_tokenizer_json_reproduces_sentence_transformers(exported, name):
    model, onnx_dir = exported(name)
    m = ModelManifest.load(onnx_dir)
    tok = Tokenizer.from_file(str(onnx_dir / m.tokenizer_file))
    texts = held_out_texts() + ["", "UNSEEN-wörd 12.5mg", "  spaces  "]
    for prompt in [None, *m.prompts.values()]:
        want = model.preprocess(texts, prompt=prompt)
        enc = tok.encode_batch([(prompt or "") + t for t in texts])
        assert [e.ids for e in enc] == want["input_ids"].tolist()
        assert [e.attention_mask for e in enc] == want["attention_mask"].tolist()
    longest = max(len(e.ids) for e in enc)
    assert longest == m.max_seq_length == model.max_seq_length  # the long text was truncated
    assert enc[0].ids[-1] != m.pad_token_id


def test_check_tokenizer_catches_a_mismatch(minilm_dir):
    model = load_source(minilm_dir)
    tok = build_tokenizer(model)
    check_tokenizer(model, tok, held_out_texts())
    tok.enable_truncation(max_length=16)
    with pytest.raises(ValueError, match="does not reproduce"):
        check_tokenizer(model, tok, held_out_texts())


def test_manifest_records_the_model(exported, tiny_gemma_dir):
    _, onnx_dir = exported("tiny_gemma")
    m = ModelManifest.load(onnx_dir)
    assert m.dimension == 32 and m.max_seq_length == 48
    assert m.prompts["query"] == "task: search result | query: "
    assert m.prompts["document"] == "title: none | text: "
    assert (m.pad_token_id, m.padding_side, m.pooling, m.normalize) == (0, "right", "mean", True)
    assert m.source_sha256 == hash_model_dir(tiny_gemma_dir)
    assert [v.precision for v in m.variants] == [Precision.FP32, Precision.INT8]
    for v in m.variants:
        assert v.usable and v.parity.texts > 40
        assert v.size_bytes == (onnx_dir / v.file).stat().st_size
        verify_file(onnx_dir, v.file, v.sha256)
    fp32, int8 = m.variants
    assert int8.size_bytes < fp32.size_bytes
    assert ModelManifest.from_dict(json.loads(json.dumps(m.to_dict()))) == m


def test_manifest_validation_rejects_bad_tokenizer_fields(minilm_onnx):
    d = ModelManifest.load(minilm_onnx).to_dict()
    with pytest.raises(ValueError, match="padding_side"):
        ModelManifest.from_dict({**d, "padding_side": "middle"})
    with pytest.raises(ValueError, match="default_prompt_name"):
        ModelManifest.from_dict({**d, "default_prompt_name": "nope"})


def test_gemma_bidirectional_attention_survives_export(exported):
    """Changing the LAST token must change the FIRST token's output, in ONNX as in PyTorch;
    a causal graph would leave it untouched."""
    model, onnx_dir = exported("tiny_gemma")
    m = ModelManifest.load(onnx_dir)
    session = ort.InferenceSession(str(onnx_dir / m.variant("fp32").file),
                                   providers=["CPUExecutionProvider"])
    a = model.preprocess(["patient presents with chest pain and fever"])
    b = {k: v.clone() if hasattr(v, "clone") else v for k, v in a.items()}
    b["input_ids"][0, -2] = model.tokenizer.convert_tokens_to_ids("cough")  # last before <eos>
    outs = []
    for feats in (a, b):
        feed = {k: feats[k].numpy() for k in ("input_ids", "attention_mask")}
        tokens, sentence = session.run(["token_embeddings", "sentence_embedding"], feed)
        ref = model(dict(feats))
        np.testing.assert_allclose(tokens, ref["token_embeddings"].detach().numpy(), atol=1e-4)
        np.testing.assert_allclose(sentence, ref["sentence_embedding"].detach().numpy(),
                                   atol=1e-5)
        outs.append(tokens)
    first_token_shift = np.abs(outs[0][0, 0] - outs[1][0, 0]).max()
    assert first_token_shift > 1e-3


def test_tampered_onnx_file_is_rejected(tiny_gemma_onnx, tmp_path):
    copy = shutil.copytree(tiny_gemma_onnx, tmp_path / "model")
    m = ModelManifest.load(copy)
    v = m.variant("int8")
    data = bytearray((copy / v.file).read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / v.file).write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        verify_file(copy, v.file, v.sha256)
    verify_file(copy, m.variant("fp32").file, m.variant("fp32").sha256)


def test_variant_under_its_threshold_is_marked_unusable(tiny_gemma_dir, tmp_path):
    result = export_model(tiny_gemma_dir, tmp_path / "m", variants=["fp32", "int8"],
                          thresholds=Thresholds(int8_cosine=1.01), parity_texts=24,
                          progress=False)
    m = ModelManifest.load(tmp_path / "m")
    fp32, int8 = m.variants
    assert fp32.usable and not int8.usable
    assert "cosine min" in int8.reason and "1.01" in int8.reason
    assert result.failed == [int8]
    assert m.variant().precision is Precision.FP32
    with pytest.raises(ValueError, match="failed its parity gate"):
        m.variant("int8")


def test_export_refuses_a_foreign_non_empty_directory(tiny_gemma_dir, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"holds files export did not write: \[.notes.txt.\]"):
        export_model(tiny_gemma_dir, tmp_path, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_topk_overlap_tolerates_ties_and_counts_misses():
    ref = np.array([[1.0, 0.5, 0.5, 0.1]])
    assert topk_overlap(ref, ref, k=2) == 1.0
    assert topk_overlap(ref, np.array([[1.0, 0.4, 0.6, 0.1]]), k=2) == 1.0  # 2 and 1 tie
    assert topk_overlap(ref, np.array([[0.0, 0.1, 0.2, 0.9]]), k=2) == 0.5


def test_model_hash_changes_with_config(tiny_gemma_dir, tmp_path):
    copy = shutil.copytree(tiny_gemma_dir, tmp_path / "m")
    before = hash_model_dir(copy)
    (copy / "README.md").write_text("edited card")
    assert hash_model_dir(copy) == before
    cfg = json.loads((copy / "config.json").read_text())
    cfg["sliding_window"] += 2
    (copy / "config.json").write_text(json.dumps(cfg))
    assert hash_model_dir(copy) != before


def test_cli_export_wiring(tiny_gemma_dir, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(main, ["export", str(tiny_gemma_dir), "--out", str(tmp_path / "a"),
                              "--variants", "fp32", "--parity-texts", "24", "--json",
                              "--no-progress"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["variants"][0]["precision"] == "fp32"
    bad = runner.invoke(main, ["export", str(tiny_gemma_dir), "--out", str(tmp_path / "b"),
                               "--variants", "fp32", "--parity-texts", "24", "--no-progress",
                               "--min-cosine-fp32", "1.5"])
    assert bad.exit_code == 1
    assert "fp32 failed the parity gate: cosine min" in bad.output
    wrong = runner.invoke(main, ["export", str(tiny_gemma_dir), "--out", str(tmp_path / "c"),
                                 "--variants", "fp16"])
    assert wrong.exit_code == 2 and "fp32, int8, int4" in wrong.output
    auto = runner.invoke(main, ["export", str(tiny_gemma_dir), "--out", str(tmp_path / "d"),
                                "--variants", "int8", "--parity-texts", "24", "--no-progress",
                                "--keep-fp32", "auto", "--reduce-range", "on", "--json"])
    assert auto.exit_code == 0, auto.output
    variant = json.loads(auto.stdout)["variants"][0]
    assert variant["recipe"]["auto"] is True and variant["recipe"]["reduce_range"] is True
    assert variant["cpu_requires"] == ""


def test_embedding_table_int8_rows_match_fp32_gather(tiny_gemma_onnx, tmp_path):
    """The rewritten table gathers the same rows to within half a quantization step."""
    import onnx
    from mimicsearch.export.quantize import quantize_embedding_tables
    from onnx import numpy_helper

    proto = onnx.load(str(tiny_gemma_onnx / "model_fp32.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    assert quantize_embedding_tables(proto) == []  # 133 rows: below the default size floor
    (name,) = quantize_embedding_tables(proto, min_rows=100)
    table = inits[name]
    q = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    assert name not in q and q[f"{name}_int8"].dtype == np.int8
    onnx.save(proto, str(tmp_path / "q.onnx"))
    texts = held_out_texts()
    ref = onnx_encode(tiny_gemma_onnx, Precision.FP32, texts)
    shutil.copy(tiny_gemma_onnx / "tokenizer.json", tmp_path)
    session = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    tok = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    enc = tok.encode_batch(texts)
    got = session.run(["sentence_embedding"], {
        "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64)})[0]
    assert (got * ref).sum(axis=1).min() > 0.999
    dequant = q[f"{name}_int8"].astype(np.float32) * q[f"{name}_scale"]
    step = np.abs(table).max(axis=1, keepdims=True) / 127
    assert (np.abs(dequant - table) <= step / 2 + 1e-7).all()


def test_int4_variant_is_written_and_gated(tiny_gemma_dir, tmp_path):
    pytest.importorskip("onnx_ir")
    import onnx

    m = export_model(tiny_gemma_dir, tmp_path / "m", variants=["int4"], parity_texts=24,
                     progress=False).manifest
    (v,) = m.variants
    assert v.precision is Precision.INT4 and v.parity.cosine_mean > 0.9
    assert v.usable == (v.parity.cosine_min >= 0.98 and v.parity.top10_overlap >= 0.9)
    ops = {n.op_type for n in onnx.load(str(tmp_path / "m" / v.file)).graph.node}
    assert "MatMulNBits" in ops


def test_rank_matmuls_covers_every_weight_matmul(tiny_gemma_onnx, tmp_path):
    import onnx
    from mimicsearch.export.quantize import rank_matmuls, weight_matmuls

    path = tiny_gemma_onnx / "model_fp32.onnx"
    tok = Tokenizer.from_file(str(tiny_gemma_onnx / "tokenizer.json"))
    enc = tok.encode_batch(held_out_texts())
    feed = {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64)}
    ranked = rank_matmuls(path, [feed])
    errors = [e for _, e in ranked]
    assert errors == sorted(errors, reverse=True) and 0 < errors[-1] and errors[0] < 0.5
    assert {n for n, _ in ranked} == set(weight_matmuls(onnx.load(str(path))))
    assert len(ranked) == 16  # 2 layers x (q, k, v, o, gate, up, down) + 2 Dense


@pytest.mark.parametrize("floor, usable", [(0.99, True), (0.999999, False)])
def test_auto_int8_keeps_the_fewest_sensitive_matmuls(tiny_gemma_dir, tmp_path, floor, usable):
    from mimicsearch.export.quantize import Int8Recipe

    m = export_model(tiny_gemma_dir, tmp_path / "m", variants=["int8"], parity_texts=24,
                     int8=Int8Recipe(auto=True), thresholds=Thresholds(int8_cosine=floor),
                     progress=False).manifest
    (v,) = m.variants
    assert v.usable is usable
    if usable:  # all-int8 already passes: nothing kept, one attempt
        assert v.recipe["attempts"] == [0] and v.recipe["kept_fp32"] == []
    else:  # doubling up to half the 16 MatMuls, then gives up with the last attempt's file
        assert v.recipe["attempts"] == [0, 1, 2, 4, 8] and len(v.recipe["kept_fp32"]) == 8
        assert "cosine min" in v.reason
    verify_file(tmp_path / "m", v.file, v.sha256)


def test_re_export_replaces_the_previous_one(tiny_gemma_dir, tmp_path):
    export_model(tiny_gemma_dir, tmp_path, variants=["fp32", "int8"], parity_texts=24,
                 progress=False)
    m = export_model(tiny_gemma_dir, tmp_path, variants=["fp32"], parity_texts=24,
                     progress=False).manifest
    assert [v.precision for v in m.variants] == [Precision.FP32]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "manifest.json", "model_fp32.onnx", "tokenizer.json"]


def test_calibration_file_feeds_the_gate(tiny_gemma_dir, tmp_path):
    notes = sample_texts(30, seed=3)
    (tmp_path / "calib.txt").write_text("\n".join(notes[:10] + [""] + notes[10:]) + "\n",
                                        encoding="utf-8")
    m = export_model(tiny_gemma_dir, tmp_path / "m", variants=["fp32"],
                     calibration=tmp_path / "calib.txt", progress=False).manifest
    assert m.variants[0].parity.texts == 30 + 30  # every note, and a query from each
    (tmp_path / "short.txt").write_text("one note\nanother\n", encoding="utf-8")
    with pytest.raises(ValueError, match="needs at least 20"):
        export_model(tiny_gemma_dir, tmp_path / "m2", calibration=tmp_path / "short.txt",
                     progress=False)


def test_gemma_export_drops_the_softmax_nan_guards_and_keeps_padded_rows_exact(
        exported, tiny_gemma_onnx):
    """Without the IsNaN/Where guards a fully masked padding row must not turn NaN: a short
    text padded far past the sliding window (5) beside a long one still matches PyTorch."""
    import onnx

    proto = onnx.load(str(tiny_gemma_onnx / "model_fp32.onnx"))
    assert not [n for n in proto.graph.node if n.op_type == "IsNaN"]
    model, _ = exported("tiny_gemma")
    texts = ["fever", " ".join(["chest pain"] * 20)]
    got = onnx_encode(tiny_gemma_onnx, Precision.FP32, texts)
    assert not np.isnan(got).any()
    want = torch_encode(model, texts)
    assert np.sum(got * want, axis=1).min() >= 0.9999


def _guarded_softmax_graph(fill: float):
    """scores + Where(keep, 0, fill) -> Softmax -> IsNaN/Where guard -> @ values."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Where", ["keep", "zero", "fill"], ["bias"]),
        helper.make_node("Add", ["scores", "bias"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["probs"], axis=-1),
        helper.make_node("IsNaN", ["probs"], ["nan"]),
        helper.make_node("Where", ["nan", "zero", "probs"], ["safe"]),
        helper.make_node("MatMul", ["safe", "values"], ["out"]),
    ]
    inits = [numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
             numpy_helper.from_array(np.array(fill, np.float32), "fill")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [3, 4]),
                     helper.make_tensor_value_info("keep", TensorProto.BOOL, [3, 4]),
                     helper.make_tensor_value_info("values", TensorProto.FLOAT, [4, 2])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [3, 2])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("fill, removed", [(-np.inf, 1), (-1e4, 0)])
def test_drop_softmax_nan_guards(fill, removed):
    from mimicsearch.export.simplify import drop_softmax_nan_guards

    rng = np.random.default_rng(0)
    feed = {"scores": rng.standard_normal((3, 4)).astype(np.float32),
            "keep": np.array([[1, 1, 0, 0], [1, 0, 1, 1], [0, 0, 0, 0]], bool),  # row 2: none
            "values": rng.standard_normal((4, 2)).astype(np.float32)}
    model = _guarded_softmax_graph(fill)
    before = ort.InferenceSession(model.SerializeToString()).run(None, feed)[0]
    assert drop_softmax_nan_guards(model) == removed
    after = ort.InferenceSession(model.SerializeToString()).run(None, feed)[0]
    assert [n.op_type for n in model.graph.node].count("IsNaN") == 1 - removed
    np.testing.assert_allclose(after[:2], before[:2], rtol=1e-6)  # real rows: unchanged
    assert not np.isnan(after).any()
    if removed:  # the fully masked row: uniform attention instead of the guard's zeros
        np.testing.assert_allclose(before[2], 0.0)
        np.testing.assert_allclose(after[2], feed["values"].mean(0), rtol=1e-5)


@pytest.mark.parametrize("precision", [Precision.FP32, Precision.INT8])
def test_gemma_attention_and_gelu_are_fused(exported, precision):
    """Every layer's attention runs in one Attention kernel that takes the grouped key/value
    heads as they are, its query and key norms and rotary embeddings in their own kernels on
    the projections' layout, and its tanh GELU in FastGelu: no head copies or transposes are
    left in attention, and the variant still passed its parity gate (the fixture checks)."""
    import onnx

    model, onnx_dir = exported("tiny_gemma")
    layers = model[0].auto_model.config.num_hidden_layers
    m = ModelManifest.load(onnx_dir)
    graph = onnx.load(str(onnx_dir / m.variant(precision).file)).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("Attention") == layers
    assert ops.count("RotaryEmbedding") == ops.count("RMSNormalization") == 2 * layers
    assert ops.count("FastGelu") == layers
    assert "Softmax" not in ops and "Tanh" not in ops and "MultiHeadAttention" not in ops
    assert [n.name for n in graph.node if "self_attn" in n.name
            and n.op_type in ("Transpose", "Expand", "Neg", "Pow")] == []
