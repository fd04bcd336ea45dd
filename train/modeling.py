"""Loading and saving sentence-transformers models so that a checkpoint means the same model.

Two transformers pitfalls with Gemma3 embedding models (EmbeddingGemma) live here:

- before 4.57, transformers ignores `use_bidirectional_attention` and silently runs Gemma3 with
  causal attention: such a setup is refused instead of producing degraded vectors;
- in 4.57.x, `Gemma3TextConfig.__init__` stores `sliding_window // 2 + 1` when bidirectional
  attention is on, and saves that halved value, so every save/load round trip shrinks the window
  (512 -> 257 -> 129) and changes the embeddings. `save_model` writes the value that reloads to
  the window the saved model really used, and checks it.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch
import transformers
from packaging.version import Version
from sentence_transformers import SentenceTransformer
from transformers import AutoConfig, PretrainedConfig

log = logging.getLogger(__name__)

GEMMA3_MODEL_TYPES = frozenset({"gemma3", "gemma3_text"})
# First transformers release whose Gemma3 honours `use_bidirectional_attention`.
MIN_BIDIRECTIONAL_GEMMA3 = Version("4.57")
TRANSFORMER_MODULE = "sentence_transformers.models.Transformer"


def check_attention_support(config: PretrainedConfig | dict,
                            transformers_version: str = transformers.__version__) -> None:
    """Refuse a Gemma3 model that the installed transformers would run with causal attention."""
    model_type = _get(config, "model_type")
    if model_type not in GEMMA3_MODEL_TYPES:
        return
    if Version(transformers_version) < MIN_BIDIRECTIONAL_GEMMA3:
        raise RuntimeError(
            f"refusing to load a Gemma3 model (model_type={model_type!r}) with transformers "
            f"{transformers_version}: versions before {MIN_BIDIRECTIONAL_GEMMA3} ignore "
            "use_bidirectional_attention and silently run it with causal attention, which gives "
            "wrong embeddings. Fix: pip install 'transformers>=4.57'"
        )
    text = _get(config, "text_config") or config
    if not _get(text, "use_bidirectional_attention"):
        log.warning("Gemma3 model without use_bidirectional_attention: it runs causal attention "
                    "(a generative checkpoint, not an embedding model?)")


def load_model(name_or_path: str | os.PathLike, device: str | None = None) -> SentenceTransformer:
    """Load a sentence-transformers model (directory or hub id), refusing unsafe Gemma3 setups."""
    name = str(name_or_path)
    local = Path(name)
    if local.exists() and not (local / "modules.json").is_file() \
            and not (local / "config.json").is_file():
        raise FileNotFoundError(
            f"{local} is not a model directory: it has neither modules.json "
            "(sentence-transformers) nor config.json (transformers)")
    check_attention_support(_read_transformer_config(name))
    model = SentenceTransformer(name, device=device)
    for cfg in _transformer_configs(model):
        check_attention_support(cfg)
    return model


def save_model(model: SentenceTransformer, out_dir: str | os.PathLike) -> Path:
    """Save `model` to `out_dir` (replacing it atomically) so that `load_model` gives the same
    vectors; raises if the written config would not reload to the window the model uses."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save(str(tmp))
        for module_dir, config in zip(_transformer_dirs(tmp), _transformer_configs(model)):
            _fix_sliding_window(module_dir / "config.json", config)
        old = out_dir.with_name(f".{out_dir.name}.old.{os.getpid()}")
        if out_dir.exists():
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def prompt_text(model: SentenceTransformer, name: str | None) -> str:
    """The text of a named prompt of `model` ("" for None: no prompt, not the model's default),
    so training and evaluation prepend exactly the same string."""
    if name is None:
        return ""
    if name not in model.prompts:
        raise ValueError(f"unknown prompt {name!r}; the model's prompts: "
                         f"{sorted(model.prompts) or 'none'}")
    return model.prompts[name]


def _fix_sliding_window(config_path: Path, live: PretrainedConfig) -> None:
    """Rewrite `sliding_window` in a saved config.json to the value whose reload through the
    installed config class equals the live model's window (also under a future transformers
    that no longer halves it)."""
    raw = json.loads(config_path.read_text(encoding="utf-8"))
    targets = [(None, raw, live)]
    if isinstance(raw.get("text_config"), dict) and hasattr(live, "text_config"):
        targets.append(("text_config", raw["text_config"], live.text_config))
    targets = [(key, section, cfg) for key, section, cfg in targets
               if getattr(cfg, "sliding_window", None) is not None and "sliding_window" in section]
    if not targets:
        return
    for _, section, cfg in targets:
        window = cfg.sliding_window
        for candidate in (window, 2 * (window - 1)):
            if type(cfg)(**{**section, "sliding_window": candidate}).sliding_window == window:
                section["sliding_window"] = candidate
                break
        else:
            raise RuntimeError(
                f"cannot save {config_path}: no sliding_window value reloads to the model's "
                f"window {window} with transformers {transformers.__version__}")
    config_path.write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    reloaded = AutoConfig.from_pretrained(config_path.parent)
    for key, _, cfg in targets:
        back = getattr(reloaded, key) if key else reloaded
        if getattr(back, "sliding_window", None) != cfg.sliding_window:
            raise RuntimeError(
                f"{config_path}: sliding_window reloads as "
                f"{getattr(back, 'sliding_window', None)}, the model uses {cfg.sliding_window}; "
                "the saved checkpoint would give different embeddings")


def _transformer_configs(model: SentenceTransformer) -> list[PretrainedConfig]:
    return [m.auto_model.config for m in model if hasattr(m, "auto_model")]


def _transformer_dirs(model_dir: Path) -> list[Path]:
    modules = json.loads((model_dir / "modules.json").read_text(encoding="utf-8"))
    return [model_dir / m["path"] for m in modules
            if (model_dir / m["path"] / "config.json").is_file() and "Transformer" in m["type"]]


def _read_transformer_config(name: str) -> dict | PretrainedConfig:
    """The backbone config, read before any weights are loaded."""
    path = Path(name)
    if path.is_dir():
        dirs = _transformer_dirs(path) if (path / "modules.json").is_file() else [path]
        for d in dirs:
            if (d / "config.json").is_file():
                return json.loads((d / "config.json").read_text(encoding="utf-8"))
        return {}
    try:
        return AutoConfig.from_pretrained(name)
    except (OSError, ValueError):
        return {}  # not a transformers backbone (or offline): the post-load check still runs


def _get(config: PretrainedConfig | dict | None, key: str):
    if config is None:
        return None
    return config.get(key) if isinstance(config, dict) else getattr(config, key, None)


def default_dtype(device: str | torch.device) -> torch.dtype:
    """bf16 on GPU, fp32 elsewhere; never fp16 (Gemma3 activations overflow it)."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
