"""CLI commands: export."""
from __future__ import annotations

import json
import sys

import click

from ._errors import fail
from ._extras import import_stage

_VARIANTS = ("fp32", "int8", "int4", "openvino-int8")


def _int_list(ctx, param, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        return tuple(int(x) for x in value.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected comma-separated integers, "
                                 "e.g. 768,512,256,128") from None


def _variants(ctx, param, value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [v for v in names if v not in _VARIANTS]
    if bad or not names:
        raise click.BadParameter(f"{value!r}: choose from {', '.join(_VARIANTS)} "
                                 "(comma-separated)")
    return names


@click.command("export")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Model directory to write (new, empty, or a previous export).")
@click.option("--variants", callback=_variants,
              help="Comma-separated: fp32, int8, int4 (needs onnx-ir), openvino-int8 (the "
              "[openvino] extra). Default: fp32,int8, and openvino-int8 where OpenVINO is "
              "installed; the runtime's default is the int8 variant measured fastest here "
              "among those whose vectors do not depend on the batch.")
@click.option("--calibration", type=click.Path(exists=True, dir_okay=False),
              help="Held-out texts for the parity gate, one per line (default: synthetic "
                   "clinical notes).")
@click.option("--parity-texts", default=160, show_default=True, type=click.IntRange(20),
              help="How many synthetic notes the parity gate uses (without --calibration).")
@click.option("--min-cosine-fp32", default=0.9999, show_default=True, type=float,
              help="Parity gate: the lowest cosine to PyTorch the fp32 variant may give.")
@click.option("--min-cosine-int8", default=0.99, show_default=True, type=float,
              help="Parity gate: the lowest cosine to PyTorch the int8 variant may give.")
@click.option("--min-cosine-int4", default=0.98, show_default=True, type=float,
              help="Parity gate: the lowest cosine to PyTorch the int4 variant may give.")
@click.option("--min-overlap", default=0.9, show_default=True, type=float,
              help="Minimum top-10 retrieval overlap with PyTorch, every variant.")
@click.option("--activations", type=click.Choice(["per-token", "per-tensor"]),
              default="per-token", show_default=True,
              help="int8 activation scales: per-token (one per token row, computed in the "
                   "graph: vectors do not depend on the batch, every projection int8) or "
                   "per-tensor (onnxruntime's dynamic quantization, one per batch, the MLP "
                   "down projections kept fp32).")
@click.option("--reduce-range", type=click.Choice(["auto", "on", "off"]), default="auto",
              show_default=True,
              help="int8 weights: on = 7-bit, exact on every CPU; off = 8-bit, more accurate, "
                   "but exact only on CPUs with VNNI (avx512_vnni, avx_vnni; AVX2 alone "
                   "saturates), so the runtime refuses that variant elsewhere; auto = off when "
                   "this host has VNNI. Use on for a model that will run on other machines.")
@click.option("--per-channel/--per-tensor", default=True, show_default=True,
              help="int8: one weight scale per output channel.")
@click.option("--quantize-embeddings/--fp32-embeddings", default=True, show_default=True,
              help="int8: quantize the token embedding table too.")
@click.option("--keep-fp32", "keep_fp32", multiple=True, metavar="REGEX",
              help="int8: MatMul node names (regex) left in fp32; repeatable; replaces the "
                   "default (sentence-transformers Dense layers, '^/\\d+/linear/MatMul$', and "
                   "with per-tensor the MLP down projections too). '' quantizes all; 'auto' "
                   "keeps the fewest "
                   "most int8-sensitive MatMuls that pass the gate (several quantize+parity "
                   "runs).")
@click.option("--smooth", type=click.Choice(["auto", "on", "off"]), default="auto",
              show_default=True,
              help="int8: fold SmoothQuant scales (activation outliers moved into the weights, "
                   "exact in fp32) before quantizing. auto = Gemma3 models (EmbeddingGemma), "
                   "where it is what passes the gate.")
@click.option("--smooth-alpha", default=0.6, show_default=True,
              type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="SmoothQuant migration strength: 0 leaves activations, 1 flattens them.")
@click.option("--smooth-folds", default="qkv,gate_up,v_o", show_default=True,
              help="Where SmoothQuant folds scales: qkv (input norm -> q/k/v), gate_up "
                   "(pre-MLP norm -> gate/up), v_o (v -> o), up_down (up -> down; pair it "
                   "with quantizing the down projections, e.g. --keep-fp32 auto).")
@click.option("--matryoshka-dims", callback=_int_list,
              help="Comma-separated truncation dims the model was trained for "
                   "(default: known for EmbeddingGemma, else none).")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def export_cmd(model_dir, out, variants, calibration, parity_texts, min_cosine_fp32,
               min_cosine_int8, min_cosine_int4, min_overlap, activations, reduce_range,
               per_channel,
               quantize_embeddings, keep_fp32, smooth, smooth_alpha, smooth_folds,
               matryoshka_dims, as_json, no_progress):
    """Export a sentence-transformers model to ONNX (one graph: transformer, pooling, dense,
    normalize), quantize it, check every variant against PyTorch, and write MODEL_DIR's
    runtime model directory. Exits 1 if a variant fails its parity gate."""
    package = import_stage("mimicsearch.export.package", "export")
    quantize = import_stage("mimicsearch.export.quantize", "export")
    parity = import_stage("mimicsearch.export.parity", "export")
    auto = "auto" in keep_fp32
    if auto and len(keep_fp32) > 1:
        raise click.BadParameter("'auto' replaces the patterns; give it alone",
                                 param_hint="--keep-fp32")
    exclude = None if not keep_fp32 or auto else tuple(k for k in keep_fp32 if k)
    try:
        recipe = quantize.Int8Recipe(activations=activations, per_channel=per_channel,
                                     reduce_range={"on": True, "off": False}.get(reduce_range),
                                     embeddings=quantize_embeddings, exclude=exclude,
                                     auto=auto, smooth=smooth, smooth_alpha=smooth_alpha,
                                     smooth_folds=tuple(f.strip() for f in smooth_folds.split(",")
                                                        if f.strip()))
    except ValueError as e:
        hint = "--reduce-range" if "--reduce-range" in str(e) else "--smooth-folds"
        raise click.BadParameter(str(e), param_hint=hint) from None
    thresholds = parity.Thresholds(fp32_cosine=min_cosine_fp32, int8_cosine=min_cosine_int8,
                                   int4_cosine=min_cosine_int4, top10_overlap=min_overlap)
    try:
        result = package.export_model(model_dir, out, variants=variants, int8=recipe,
                                      thresholds=thresholds, calibration=calibration,
                                      parity_texts=parity_texts,
                                      matryoshka_dims=matryoshka_dims,
                                      progress=not no_progress)
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError,
            ImportError) as e:
        raise fail(e) from None
    m = result.manifest
    if as_json:
        click.echo(json.dumps(m.to_dict(), indent=2))
    else:
        click.echo(f"{result.out_dir}: dim {m.dimension}, max_seq_length {m.max_seq_length}, "
                   f"source {m.fingerprint}")
        click.echo(f"{'variant':13} {'size MB':>8} {'cos min':>8} {'cos mean':>9} "
                   f"{'top10':>6} {'batch':>8} {'texts/s':>8}  status")
        try:
            default = m.variant()
        except ValueError:  # none usable: the errors below say why
            default = None
        for v in m.variants:
            p = v.parity
            speed = v.speed.get("texts_per_s")
            status = ("UNUSABLE" if not v.usable else
                      "ok, default" if v is default else "ok")
            if v.cpu_requires:
                status += f", needs {v.cpu_requires.upper()}"
            click.echo(f"{v.name:13} {v.size_bytes / 1e6:8.1f} {p.cosine_min:8.5f} "
                       f"{p.cosine_mean:9.5f} {p.top10_overlap:6.3f} "
                       f"{p.batch_cosine_min if p.batch_cosine_min is not None else 0:8.5f} "
                       f"{speed if speed is not None else '':>8}  {status}")
    if result.failed:
        for v in result.failed:
            click.echo(f"error: {v.name} failed the parity gate: {v.reason}",
                       err=True)
        sys.exit(1)


COMMANDS: list = [export_cmd]
