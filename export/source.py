"""The PyTorch sentence-transformers model being exported, and what the runtime must know of it.

Everything the manifest says about the model (dimension, prompts, tokenizer settings, hash)
is read here from the loaded model, so the export and its manifest cannot disagree.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from mimicsearch.fileio import sha256_file

# Matryoshka dimensions of known embedding models, keyed by (model_type, dimension).
# EmbeddingGemma was trained with MRL at these sizes; other models get none unless told.
KNOWN_MATRYOSHKA = {("gemma3_text", 768): (768, 512, 256, 128)}
# Files whose bytes decide the vectors a model directory produces.
_HASHED_SUFFIXES = {".safetensors", ".bin", ".json", ".txt", ".model"}
_UNHASHED_NAMES = {"README.md", "training_args.bin", "trainer_state.json"}


@dataclass(frozen=True)
class SourceInfo:
    """What the runtime needs to reproduce `model.encode` from token ids to vectors."""

    path: str
    sha256: str
    model_type: str
    dimension: int
    max_seq_length: int
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str = ""
    pooling: str = "mean"
    pad_token_id: int = 0
    padding_side: str = "right"
    matryoshka_dims: tuple[int, ...] = ()


def load_source(model_dir: str | os.PathLike):
    """Load the sentence-transformers model on CPU in fp32, with an L2 Normalize at the end.

    Uses the train stage's loader, which refuses Gemma3 setups that would silently run causal
    attention. A model without Normalize gets one appended: the exported `sentence_embedding`
    is always unit length, and cosine parity is unaffected by the scale.
    """
    from mimicsearch.train.modeling import load_model

    Normalize = st_modules().Normalize
    path = Path(model_dir)
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(
            f"{path} is not a sentence-transformers model directory (no modules.json); "
            "export takes a model saved by `mimicsearch train` or SentenceTransformer.save()")
    model = load_model(path, device="cpu").float().eval()
    if not any(isinstance(m, Normalize) for m in model):
        model.append(Normalize())
    return model


def describe_source(model, model_dir: str | os.PathLike,
                    matryoshka_dims: tuple[int, ...] | None = None) -> SourceInfo:
    """Read the manifest's model facts from a loaded model; refuse what the graph can't carry."""
    Pooling = st_modules().Pooling
    transformer = model[0]
    backbone = getattr(transformer, "auto_model", None)
    if backbone is None:
        raise ValueError(f"{model_dir}: first module {type(transformer).__name__} is not a "
                         "transformers backbone; only Transformer-based models can be exported")
    poolings = [m for m in model if isinstance(m, Pooling)]
    if len(poolings) != 1:
        raise ValueError(f"{model_dir}: expected one Pooling module, found {len(poolings)}")
    pooling = poolings[0]
    if not pooling.include_prompt:
        raise ValueError(
            f"{model_dir}: Pooling(include_prompt=False) excludes prompt tokens per call, which a "
            "fixed graph cannot reproduce; set include_prompt=True and re-save to export")
    tok = model.tokenizer
    if tok.pad_token_id is None:
        raise ValueError(f"{model_dir}: the tokenizer has no pad token; batches need one")
    get_dim = getattr(model, "get_embedding_dimension", None) \
        or model.get_sentence_embedding_dimension
    dimension = int(get_dim())
    model_type = str(backbone.config.model_type)
    if matryoshka_dims is None:
        matryoshka_dims = KNOWN_MATRYOSHKA.get((model_type, dimension), ())
    bad = [d for d in matryoshka_dims if not 0 < d <= dimension]
    if bad:
        raise ValueError(f"matryoshka dims {bad} are outside 1..{dimension} (the model's "
                         "dimension)")
    return SourceInfo(
        path=str(Path(model_dir).resolve()),
        sha256=hash_model_dir(model_dir),
        model_type=model_type,
        dimension=dimension,
        max_seq_length=int(model.max_seq_length),
        prompts={str(k): str(v) for k, v in (model.prompts or {}).items()},
        default_prompt_name=getattr(model, "default_prompt_name", None) or "",
        pooling=_pooling_mode(pooling),
        pad_token_id=int(tok.pad_token_id),
        padding_side=str(tok.padding_side),
        matryoshka_dims=tuple(sorted(set(matryoshka_dims), reverse=True)),
    )


def hash_model_dir(model_dir: str | os.PathLike) -> str:
    """sha256 over the weights, configs and tokenizer files of a model directory.

    Configs are included because they change vectors too (e.g. Gemma3's sliding_window);
    the model card and trainer state are not.
    """
    root = Path(model_dir)
    dirs = [root]
    modules = root / "modules.json"
    if modules.is_file():
        dirs += [root / m["path"] for m in json.loads(modules.read_text(encoding="utf-8"))
                 if m.get("path") and (root / m["path"]).is_dir()]
    h = hashlib.sha256()
    for d in dirs:
        for f in sorted(d.iterdir()):
            if f.is_file() and f.suffix in _HASHED_SUFFIXES and f.name not in _UNHASHED_NAMES:
                h.update(f"{f.relative_to(root).as_posix()}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def st_modules():
    """sentence-transformers' module classes (moved in 5.7; the old path still works before)."""
    try:
        from sentence_transformers.sentence_transformer import modules
    except ImportError:
        from sentence_transformers import models as modules
    return modules


def _pooling_mode(pooling) -> str:
    mode = getattr(pooling, "pooling_mode", None)
    if mode is None:
        return str(pooling.get_pooling_mode_str())
    return mode if isinstance(mode, str) else "+".join(mode)
