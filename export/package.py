"""The exported model directory: ONNX variants, tokenizer.json and manifest.json, written
only after each variant has been measured against the PyTorch model.

Parity is measured end to end as the runtime will run it: texts go through the shipped
tokenizer.json and the shipped (optimized) ONNX file, never through PyTorch's tokenizer.
"""
from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mimicsearch.fileio import sha256_file
from mimicsearch.manifest import MANIFEST, ModelManifest, Precision, Variant

from .graph import INPUT_NAMES, OUTPUT_NAME, check_graph, export_graph
from .parity import Thresholds, build_parity_set, gate, measure_parity, read_texts, sample_texts
from .quantize import Int8Recipe, optimize_graph, quantize_int4, quantize_int8
from .source import describe_source, load_source
from .tokenizer import build_tokenizer, check_tokenizer, save_tokenizer

log = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
VARIANT_FILES = {p: f"model_{p.value}.onnx" for p in Precision}
DEFAULT_VARIANTS = (Precision.FP32, Precision.INT8)


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    manifest: ModelManifest

    @property
    def failed(self) -> list[Variant]:
        return [v for v in self.manifest.variants if not v.usable]


def export_model(model_dir: str | os.PathLike, out_dir: str | os.PathLike,
                 variants: Sequence[Precision | str] = DEFAULT_VARIANTS,
                 int8: Int8Recipe | None = None, thresholds: Thresholds | None = None,
                 calibration: str | os.PathLike | None = None, parity_texts: int = 160,
                 matryoshka_dims: Sequence[int] | None = None, batch_size: int = 16,
                 progress: bool = True) -> ExportResult:
    """Export the sentence-transformers model in `model_dir` to a runtime model directory.

    Every requested variant is written and measured; one under its parity thresholds is
    listed with usable=false and the reason (check `ExportResult.failed`).
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
    save_tokenizer(tok, out / TOKENIZER_FILE)
    steps.update()

    steps.set_postfix_str("reference vectors")
    parity_set = build_parity_set(_torch_embedder(model, batch_size), texts, info.prompts)
    steps.update()

    written = []
    with tempfile.TemporaryDirectory(prefix="mimicsearch-export-") as tmp:
        raw = export_graph(model, Path(tmp) / "raw.onnx")
        del model  # the parity set holds the reference vectors; free the torch weights
        for precision in variants:
            steps.set_postfix_str(precision.value)
            path = out / VARIANT_FILES[precision]
            if precision is Precision.FP32:
                optimize_graph(raw, path)
            elif precision is Precision.INT8:
                quantize_int8(raw, path, int8)
            else:
                quantize_int4(raw, path)
            check_graph(path, info.dimension)
            parity = measure_parity(parity_set, _onnx_embedder(path, tok, batch_size))
            reason = gate(precision, parity, thresholds)
            if reason:
                log.warning("%s variant fails the parity gate: %s", precision.value, reason)
            written.append(Variant(precision=precision, file=path.name,
                                   sha256=sha256_file(path), size_bytes=path.stat().st_size,
                                   parity=parity, usable=not reason, reason=reason))
            steps.update()
    steps.close()

    manifest = ModelManifest(
        source_model=info.path, source_sha256=info.sha256, dimension=info.dimension,
        max_seq_length=info.max_seq_length, variants=tuple(written),
        matryoshka_dims=info.matryoshka_dims, prompts=info.prompts, normalize=True,
        pooling=info.pooling, tokenizer_file=TOKENIZER_FILE, pad_token_id=info.pad_token_id,
        padding_side=info.padding_side, default_prompt_name=info.default_prompt_name,
        input_names=INPUT_NAMES, output_name=OUTPUT_NAME)
    manifest.save(out)
    return ExportResult(out, ModelManifest.load(out))


def _parse_variants(variants: Sequence[Precision | str]) -> list[Precision]:
    parsed = []
    for v in variants:
        try:
            p = Precision(v)
        except ValueError:
            raise ValueError(f"unknown variant {v!r}; valid: "
                             f"{[p.value for p in Precision]}") from None
        if p not in parsed:
            parsed.append(p)
    if not parsed:
        raise ValueError(f"no variants requested; valid: {[p.value for p in Precision]}")
    return parsed


def _prepare_out_dir(out_dir: str | os.PathLike) -> Path:
    """Create `out_dir`, refusing a non-empty directory that is not an exported model."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; give a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise FileExistsError(f"--out {out} is a non-empty directory without {MANIFEST}; "
                              "refusing to write model files into it (give a new or empty "
                              "directory, or a previous export to replace)")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _torch_embedder(model, batch_size: int):
    def embed(texts: Sequence[str], prompt: str) -> np.ndarray:
        return model.encode(list(texts), prompt=prompt or None, batch_size=batch_size,
                            convert_to_numpy=True, normalize_embeddings=True,
                            show_progress_bar=False).astype(np.float32)
    return embed


def _onnx_embedder(path: Path, tok, batch_size: int):
    """Embed with plain onnxruntime and the shipped tokenizer, as the runtime does."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def embed(texts: Sequence[str], prompt: str) -> np.ndarray:
        out = []
        for i in range(0, len(texts), batch_size):
            enc = tok.encode_batch([prompt + t for t in texts[i:i + batch_size]])
            feed = {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                    "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64)}
            out.append(session.run([OUTPUT_NAME], feed)[0])  # (batch, dim)
        return np.concatenate(out).astype(np.float32)
    return embed
