"""SmoothQuant folding on a real (tiny, random) Gemma3: the fp32 function stays, the
activation outliers move into the weights, and the int8 export records it."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from mimicsearch.export.parity import sample_texts
from mimicsearch.export.smooth import SmoothRecipe, input_absmax, smooth_gemma3
from mimicsearch.export.source import load_source

from mimicsearch.cli import main
from mimicsearch.model_manifest import ModelManifest


def spread(stats, name):
    """Largest over median per-channel |activation|: what one int8 scale must span."""
    x = stats[name]
    return float(x.max() / x.median())


@pytest.mark.parametrize("folds", [("qkv", "gate_up", "v_o"), ("qkv", "gate_up", "v_o",
                                                                "up_down")])
def test_smoothing_keeps_the_function_and_flattens_the_inputs(tiny_gemma_dir, folds):
    model = load_source(tiny_gemma_dir)
    texts = sample_texts(8, seed=5)
    before = model.encode(texts, convert_to_numpy=True)
    stats = input_absmax(model, texts)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    assert smooth_gemma3(model, texts, SmoothRecipe(alpha=0.6, folds=folds)) == 2
    after = model.encode(texts, convert_to_numpy=True)
    assert np.abs(after - before).max() < 1e-5
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, weights[k])}
    assert "0.model.layers.0.self_attn.k_proj.weight" in changed
    assert "0.model.layers.1.pre_feedforward_layernorm.weight" in changed
    assert not any(k.startswith(("2.", "3.")) for k in changed)  # Dense layers untouched
    assert ("0.model.layers.0.mlp.down_proj.weight" in changed) == ("up_down" in folds)
    flat = input_absmax(model, texts)
    for name in ("0.model.layers.0.self_attn.q_proj", "0.model.layers.1.mlp.up_proj",
                 "0.model.layers.1.self_attn.o_proj"):
        assert spread(flat, name) < spread(stats, name)


def test_smooth_recipe_refuses_bad_settings():
    with pytest.raises(ValueError, match="unknown SmoothQuant folds"):
        SmoothRecipe(folds=("qkv", "k_o"))
    with pytest.raises(ValueError, match="alpha"):
        SmoothRecipe(alpha=1.0)


def test_int8_export_records_the_smoothing(tiny_gemma_onnx, minilm_onnx):
    gemma = ModelManifest.load(tiny_gemma_onnx).variant("int8").recipe
    assert gemma["smooth"] == "auto" and gemma["smoothed"]["folds"] == ["qkv", "gate_up", "v_o"]
    # Dense layers see one pooled row per text: fp32 costs nothing there
    assert {"/2/linear/MatMul", "/3/linear/MatMul"} <= set(gemma["kept_fp32"])
    assert ModelManifest.load(minilm_onnx).variant("int8").recipe["smoothed"] is None


def test_cli_smooth_on_refuses_a_model_it_cannot_fold(minilm_dir, tmp_path):
    r = CliRunner().invoke(main, ["export", str(minilm_dir), "--out", str(tmp_path / "m"),
                                  "--variants", "int8", "--smooth", "on", "--no-progress"])
    assert r.exit_code == 1 and "Gemma3 models only" in r.output, r.output


def test_cli_smooth_off_exports_unsmoothed(tiny_gemma_dir, tmp_path):
    r = CliRunner().invoke(main, ["export", str(tiny_gemma_dir), "--out", str(tmp_path / "m"),
                                  "--variants", "int8", "--smooth", "off", "--parity-texts",
                                  "24", "--json", "--no-progress"])
    assert r.exit_code == 0, r.output
    recipe = json.loads(r.stdout)["variants"][0]["recipe"]
    assert recipe["smooth"] == "off" and recipe["smoothed"] is None


def test_cli_refuses_an_unknown_fold_before_any_work(tiny_gemma_dir, tmp_path):
    r = CliRunner().invoke(main, ["export", str(tiny_gemma_dir), "--out", str(tmp_path / "m"),
                                  "--smooth-folds", "qkv,k_o"])
    assert r.exit_code == 2 and "unknown SmoothQuant folds ['k_o']" in r.output, r.output
    assert not (tmp_path / "m").exists()
