"""Full-range int8 weights need a CPU whose int8 products add in 32 bits (VNNI): the export
records it, and a host without it never runs that variant, by default or when asked."""
import json
import logging
import shutil

import pytest
from click.testing import CliRunner
from mimicsearch.export.quantize import Int8Recipe

from mimicsearch import cpu
from mimicsearch.cli import main
from mimicsearch.encoder import Encoder
from mimicsearch.model_manifest import ModelManifest

AVX2_ONLY = {"fpu", "sse2", "avx", "avx2", "fma"}
VNNI = AVX2_ONLY | {"avx512f", "avx512_vnni"}


def host(monkeypatch, flags):
    monkeypatch.setattr(cpu, "_host_flags", lambda: set(flags))


def test_requirements_read_the_host_flags(monkeypatch):
    assert cpu.meets("vnni", "avx2 avx_vnni") and cpu.meets("vnni", "asimddp")
    assert not cpu.meets("vnni", "avx2 avx512f")
    assert cpu.meets("", "") and not cpu.meets("amx_fp8", "avx2 avx512_vnni amx_fp8")
    host(monkeypatch, AVX2_ONLY)
    assert cpu.cpu_flags() == "avx2" and not cpu.meets("vnni")
    host(monkeypatch, VNNI)
    assert cpu.cpu_flags() == "avx2 avx512f avx512_vnni" and cpu.meets("vnni")


def test_weight_range_follows_the_exporting_host(monkeypatch):
    host(monkeypatch, VNNI)
    full = Int8Recipe()
    assert full.reduce_range is False and full.cpu_requires == "vnni"
    assert Int8Recipe(reduce_range=True).cpu_requires == ""
    host(monkeypatch, AVX2_ONLY)
    assert Int8Recipe().reduce_range is True and Int8Recipe().cpu_requires == ""
    with pytest.raises(ValueError, match="this host has none"):
        Int8Recipe(reduce_range=False)


def test_the_export_records_what_its_int8_needs(minilm_onnx):
    v = ModelManifest.load(minilm_onnx).variant("int8")
    assert v.recipe["reduce_range"] is (not cpu.meets("vnni"))
    assert v.cpu_requires == ("vnni" if cpu.meets("vnni") else "")


@pytest.fixture
def needs_vnni(minilm_onnx, tmp_path):
    """The MiniLM export with its int8 variant marked as full range (what a VNNI host writes)."""
    copy = tmp_path / "model"
    shutil.copytree(minilm_onnx, copy)
    m = json.loads((copy / "manifest.json").read_text())
    for v in m["variants"]:
        if v["precision"] == "int8":
            v["cpu_requires"] = "vnni"
    (copy / "manifest.json").write_text(json.dumps(m))
    return copy


def test_a_host_without_vnni_never_runs_full_range_int8(needs_vnni, monkeypatch, caplog):
    host(monkeypatch, AVX2_ONLY)
    with caplog.at_level(logging.WARNING, logger="mimicsearch.encoder"):
        enc = Encoder(needs_vnni)
    assert enc.variant.name == "fp32"
    assert "int8 variant has full-range 8-bit weights" in caplog.text
    assert "running the fp32 variant" in caplog.text
    with pytest.raises(ValueError, match="avx512_vnni or avx_vnni.*--reduce-range on"):
        Encoder(needs_vnni, precision="int8")
    host(monkeypatch, VNNI)
    caplog.clear()
    assert Encoder(needs_vnni).variant.name == "int8" and not caplog.text


def test_an_unknown_requirement_is_refused_not_guessed(needs_vnni):
    m = json.loads((needs_vnni / "manifest.json").read_text())
    for v in m["variants"]:
        v["cpu_requires"] = "amx_fp8"
    (needs_vnni / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="no usable variant this host can run.*'amx_fp8'"):
        ModelManifest.load(needs_vnni).variant()


def test_encode_cli_names_the_missing_cpu_feature(needs_vnni, synth_dir, monkeypatch,
                                                  tmp_path):
    host(monkeypatch, AVX2_ONLY)
    out = CliRunner().invoke(main, ["encode", str(synth_dir / "NOTEEVENTS.csv"), "--model",
                                    str(needs_vnni), "--out", str(tmp_path / "e"),
                                    "--precision", "int8", "--no-progress"])
    assert out.exit_code == 1, out.output
    assert "avx512_vnni or avx_vnni" in out.output and "Traceback" not in out.output


def test_export_refuses_full_range_weights_on_a_host_without_vnni(tiny_gemma_dir, tmp_path,
                                                                 monkeypatch):
    host(monkeypatch, AVX2_ONLY)
    out = CliRunner().invoke(main, ["export", str(tiny_gemma_dir), "--out", str(tmp_path / "x"),
                                    "--variants", "int8", "--reduce-range", "off"])
    assert out.exit_code == 2 and "--reduce-range" in out.output
    assert "this host has none" in out.output
    assert not (tmp_path / "x").exists()
