"""The exported model directory: ONNX variants, tokenizer.json and manifest.json; the
manifest, the only thing the runtime trusts, is written last, after every variant has been
measured against the PyTorch model.

Parity is measured end to end as the runtime will run it: texts go through the shipped
tokenizer.json and the shipped (optimized) ONNX file, never through PyTorch's tokenizer.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mimicsearch.cpu import cpu_flags, physical_cores
from mimicsearch.encoder import Encoder
from mimicsearch.fileio import MANIFEST, is_temp_name, sha256_file
from mimicsearch.model_manifest import ModelManifest, Precision, Runtime, Variant

from . import openvino
from .graph import INPUT_NAMES, OUTPUT_NAME, check_graph, export_graph
from .parity import Thresholds, build_parity_set, gate, measure_parity, read_texts, sample_texts
from .quantize import Int8Recipe, optimize_graph, quantize_int4, quantize_int8, rank_matmuls
from .smooth import SmoothRecipe, is_gemma3, smooth_gemma3
from .source import describe_source, load_source
from .tokenizer import build_tokenizer, check_tokenizer, save_tokenizer

log = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
OPENVINO_INT8 = "openvino-int8"
VARIANT_FILES = {**{p.value: f"model_{p.value}.onnx" for p in Precision},
                 OPENVINO_INT8: "model_openvino_int8.xml"}
# Synthetic notes for quantization statistics (SmoothQuant scales, `auto`'s ranking): another
# seed than the parity texts, so the gate stays held out.
CALIBRATION_SEED = 31337


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    manifest: ModelManifest

    @property
    def failed(self) -> list[Variant]:
        return [v for v in self.manifest.variants if not v.usable]


def export_model(model_dir: str | os.PathLike, out_dir: str | os.PathLike,
                 variants: Sequence[Precision | str] | None = None,
                 int8: Int8Recipe | None = None, thresholds: Thresholds | None = None,
                 calibration: str | os.PathLike | None = None, parity_texts: int = 160,
                 matryoshka_dims: Sequence[int] | None = None, batch_size: int = 16,
                 progress: bool = True) -> ExportResult:
    """Export the sentence-transformers model in `model_dir` to a runtime model directory.

    Every requested variant is written and measured (parity, and texts/s on this host, from
    which the runtime picks its default); one under its parity thresholds is listed with
    usable=false and the reason (check `ExportResult.failed`). variants: names in
    VARIANT_FILES (default: fp32, int8, and openvino-int8 where OpenVINO and NNCF are
    installed).
    """
    variants = _parse_variants(variants)
    int8 = int8 or Int8Recipe()
    thresholds = thresholds or Thresholds()
    out = _prepare_out_dir(out_dir)
    steps = tqdm(total=3 + len(variants), desc="export", unit="step", disable=not progress)

    steps.set_postfix_str("loading model")
    model = load_source(model_dir)
    info = describe_source(model, model_dir,
                           tuple(matryoshka_dims) if matryoshka_dims is not None else None)
    texts = read_texts(calibration) if calibration else sample_texts(parity_texts)
    steps.update()

    steps.set_postfix_str("tokenizer")
    tok = build_tokenizer(model)
    check_tokenizer(model, tok, texts[:64], prompts=[None, *info.prompts.values()])
    _remove_previous_export(out)
    save_tokenizer(tok, out / TOKENIZER_FILE)
    steps.update()

    steps.set_postfix_str("reference vectors")
    parity_set = build_parity_set(_torch_embedder(model, batch_size, info.prompts), texts)
    steps.update()
    # Everything but the variants: the runtime Encoder measures each variant with it.
    provisional = ModelManifest(
        source_model=info.path, source_sha256=info.sha256, dimension=info.dimension,
        max_seq_length=info.max_seq_length, variants=(),
        matryoshka_dims=info.matryoshka_dims, prompts=info.prompts, normalize=True,
        pooling=info.pooling, tokenizer_file=TOKENIZER_FILE,
        tokenizer_sha256=sha256_file(out / TOKENIZER_FILE), pad_token_id=info.pad_token_id,
        padding_side=info.padding_side, default_prompt_name=info.default_prompt_name,
        input_names=INPUT_NAMES, output_name=OUTPUT_NAME)

    written = []
    with tempfile.TemporaryDirectory(prefix="mimicsearch-export-") as tmp:
        raw = export_graph(model, Path(tmp) / "raw.onnx")
        int8_src, smoothed = raw, None
        if "int8" in variants and _smooths(int8, model):
            steps.set_postfix_str("smoothing")
            smoothed = SmoothRecipe(int8.smooth_alpha, int8.smooth_folds)
            smooth_gemma3(model, _smooth_texts(smoothed.calibration_texts, info.prompts),
                          smoothed)
            int8_src = export_graph(model, Path(tmp) / "smoothed.onnx")
        del model  # the parity set holds the reference vectors; free the torch weights
        for name in variants:
            steps.set_postfix_str(name)
            path = out / VARIANT_FILES[name]
            precision = Precision.INT8 if name == OPENVINO_INT8 else Precision(name)
            runtime = Runtime.OPENVINO if name == OPENVINO_INT8 else Runtime.ONNXRUNTIME
            runtime_config = openvino.RUNTIME_CONFIG if runtime is Runtime.OPENVINO else {}
            speed: dict = {}

            def measure(path=path, precision=precision, runtime=runtime,
                        runtime_config=runtime_config, speed=speed):
                if runtime is Runtime.ONNXRUNTIME:
                    check_graph(path, info.dimension)
                embed = _runtime_embedder(path, out / TOKENIZER_FILE, provisional, runtime,
                                          runtime_config)
                start = time.perf_counter()
                parity = measure_parity(parity_set, embed)
                speed.update(_speed(parity.texts, time.perf_counter() - start, runtime))
                parity = dataclasses.replace(parity, batch_cosine_min=_batch_cosine_min(
                    embed, parity_set.documents[:16]))
                return parity, gate(precision, parity, thresholds)

            weights = ""
            requires = int8.cpu_requires if name == Precision.INT8.value else ""
            if name == OPENVINO_INT8:
                recipe = openvino.export_openvino(raw, path)
                weights = openvino.weights_file(path).name
                parity, reason = measure()
            elif precision is Precision.FP32:
                optimize_graph(raw, path)
                recipe = {"optimization": "extended"}
                parity, reason = measure()
            elif precision is Precision.INT8 and int8.auto:
                parity, reason, recipe = _auto_int8(int8_src, path, int8, tok, measure)
                recipe["smoothed"] = smoothed.to_dict() if smoothed else None
            elif precision is Precision.INT8:
                kept = quantize_int8(int8_src, path, int8)
                recipe = {**int8.to_dict(), "kept_fp32": kept,
                          "smoothed": smoothed.to_dict() if smoothed else None}
                parity, reason = measure()
            else:
                quantize_int4(raw, path)
                recipe = {"method": "MatMulNBits", "bits": 4, "block_size": 32}
                parity, reason = measure()
            if reason:
                log.warning("%s variant fails the parity gate: %s", name, reason)
            written.append(Variant(
                precision=precision, file=path.name, sha256=sha256_file(path),
                size_bytes=path.stat().st_size + (
                    (out / weights).stat().st_size if weights else 0),
                parity=parity, usable=not reason, reason=reason, recipe=recipe, runtime=runtime,
                weights_file=weights,
                weights_sha256=sha256_file(out / weights) if weights else "",
                runtime_config=dict(runtime_config), speed=dict(speed),
                cpu_requires=requires))
            steps.update()
    steps.close()

    dataclasses.replace(provisional, variants=tuple(written)).save(out)
    return ExportResult(out, ModelManifest.load(out))


def _auto_int8(raw: Path, path: Path, recipe: Int8Recipe, tok, measure):
    """Quantize with the k most int8-sensitive MatMuls kept fp32, for the smallest k (found
    by doubling, then bisection) whose variant passes the gate; the file at `path` is the
    passing one, or the last attempt's if none up to half the MatMuls passes."""
    calib = sample_texts(32, seed=CALIBRATION_SEED)
    batches = []
    for i in range(0, len(calib), 8):
        enc = tok.encode_batch(calib[i:i + 8])
        batches.append({"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                        "attention_mask": np.array([e.attention_mask for e in enc],
                                                   dtype=np.int64)})
    ranked = [name for name, _ in rank_matmuls(raw, batches, recipe.reduce_range,
                                                  recipe.activations)]
    results: dict[int, tuple] = {}
    order: list[int] = []

    def attempt(k: int):
        quantize_int8(raw, path, recipe, keep=ranked[:k])
        results[k] = measure()
        order.append(k)
        log.info("int8 auto: %d MatMuls fp32 -> cosine min %.5f%s", k,
                 results[k][0].cosine_min, "" if not results[k][1] else " (fails)")
        return not results[k][1]

    lo, hi, k = -1, None, 0                      # lo fails, hi passes
    while k <= len(ranked) // 2:
        if attempt(k):
            hi = k
            break
        lo, k = k, max(1, 2 * k)
    if hi is not None:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if attempt(mid):
                hi = mid
            else:
                lo = mid
        if order[-1] != hi:                      # the file on disk is from another attempt
            attempt(hi)
    best = hi if hi is not None else max(results)
    parity, reason = results[best]
    settings = {k: v for k, v in recipe.to_dict().items() if k != "exclude"}
    return parity, reason, {**settings, "kept_fp32": ranked[:best], "attempts": order}


def _smooths(recipe: Int8Recipe, model) -> bool:
    if recipe.smooth == "off":
        return False
    if is_gemma3(model):
        return True
    if recipe.smooth == "on":
        raise ValueError("SmoothQuant folding (--smooth on) is implemented for Gemma3 models "
                         "only; use --smooth auto or off")
    return False


def _smooth_texts(n: int, prompts: dict[str, str]) -> list[str]:
    """Calibration for the activation statistics, as documents and as short queries."""
    texts = sample_texts(n, seed=CALIBRATION_SEED)
    doc, query = prompts.get("document", ""), prompts.get("query", "")
    return ([doc + t for t in texts[: n // 2]]
            + [query + " ".join(t.split()[:8]) for t in texts[n // 2:]])


def default_variants() -> tuple[str, ...]:
    """fp32 and int8, and openvino-int8 where OpenVINO and NNCF are installed."""
    has_openvino = all(importlib.util.find_spec(m) for m in ("openvino", "nncf"))
    return ("fp32", "int8") + ((OPENVINO_INT8,) if has_openvino else ())


def _parse_variants(variants: Sequence[Precision | str] | None) -> list[str]:
    if variants is None:
        return list(default_variants())
    parsed = []
    for v in variants:
        name = getattr(v, "value", v)
        if name not in VARIANT_FILES:
            raise ValueError(f"unknown variant {v!r}; valid: {list(VARIANT_FILES)}")
        if name not in parsed:
            parsed.append(name)
    if not parsed:
        raise ValueError(f"no variants requested; valid: {list(VARIANT_FILES)}")
    return parsed


def _batch_cosine_min(embed, texts: list[str]) -> float:
    """Each text alone against the same texts batched (padded to the longest)."""
    batched = embed(texts, "document")
    alone = np.concatenate([embed([t], "document") for t in texts])
    return float((batched * alone).sum(axis=1).min())


def _speed(texts: int, seconds: float, runtime: Runtime) -> dict:
    """What the default variant is chosen by: texts/s over the parity texts on this host."""
    return {"texts_per_s": round(texts / seconds, 2), "threads": physical_cores(),
            "cpu_flags": cpu_flags(), "runtime": runtime.value}


def _prepare_out_dir(out_dir: str | os.PathLike) -> Path:
    """Create `out_dir`; only an empty directory or a previous export may be written into,
    and of a previous export only the files its manifest names are ever replaced."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; give a directory")
    ours = {".lock"}
    if (out / MANIFEST).is_file():
        try:
            previous = ModelManifest.load(out)
        except ValueError as e:
            raise FileExistsError(f"--out {out} holds a directory that is not a model export "
                                  f"({e}); export will not replace it: give a new or empty "
                                  "directory") from None
        ours |= {MANIFEST, previous.tokenizer_file,
                 *(f for v in previous.variants for f in v.files)}
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir()
                         if p.name not in ours and not is_temp_name(p.name))
        if foreign:
            raise FileExistsError(f"--out {out} holds files export did not write: "
                                  f"{foreign[:5]}{' …' if len(foreign) > 5 else ''}; give a "
                                  "new or empty directory, or a previous export to replace")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _remove_previous_export(out: Path) -> None:
    """Only what the previous manifest names goes, the manifest first, so no reader pairs it
    with new files; variants not exported this time do not linger."""
    if not (out / MANIFEST).is_file():
        return
    previous = ModelManifest.load(out)
    (out / MANIFEST).unlink()
    for name in {previous.tokenizer_file, *(f for v in previous.variants for f in v.files)}:
        (out / name).unlink(missing_ok=True)


def _torch_embedder(model, batch_size: int, prompts: dict[str, str]):
    def embed(texts: Sequence[str], prompt: str) -> np.ndarray:
        return model.encode(list(texts), prompt=prompts.get(prompt) or None,
                            batch_size=batch_size, convert_to_numpy=True,
                            normalize_embeddings=True, show_progress_bar=False
                            ).astype(np.float32)
    return embed


def _runtime_embedder(path: Path, tokenizer: Path, provisional: ModelManifest,
                      runtime: Runtime = Runtime.ONNXRUNTIME,
                      runtime_config: dict | None = None):
    """The runtime Encoder over the variant file: the gate measures what users run (its
    tokenizer, padding, pad id, inputs, length batching and runtime)."""
    encoder = Encoder.from_files(path, tokenizer, provisional, runtime=runtime,
                                 runtime_config=runtime_config)

    def embed(texts: Sequence[str], prompt: str) -> np.ndarray:
        return encoder.encode(list(texts), prompt=prompt)
    return embed
