"""SmoothQuant for Gemma3: move per-channel activation outliers into the weights before int8.

onnxruntime's dynamic int8 quantizes each MatMul input with one scale for the whole tensor,
so a few channels with large activations leave the rest with a handful of levels. For a
MatMul whose input comes from something linear per channel, dividing that channel by s and
multiplying the matching weight row by s changes nothing in fp32 but flattens the input
(Xiao et al., 2023, s = max|X|^a / max|W|^(1-a)). In a Gemma3 layer four such places exist:

- input_layernorm -> q/k/v_proj and pre_feedforward_layernorm -> gate/up_proj: the norm's
  (1 + weight) takes 1/s;
- v_proj -> o_proj: attention mixes tokens, never channels, so v_proj's output rows take 1/s
  (shared by the query heads that read one key/value head);
- up_proj -> down_proj: gelu(gate) * up is linear in up, so up_proj's output rows take 1/s.

Measured on EmbeddingGemma-300m (BENCHMARKS.md): it is what lets int8 pass the parity gate.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

FOLDS = ("qkv", "gate_up", "v_o", "up_down")


@dataclass(frozen=True)
class SmoothRecipe:
    alpha: float = 0.5
    folds: tuple[str, ...] = ("qkv", "gate_up", "v_o")
    calibration_texts: int = 32

    def __post_init__(self):
        unknown = sorted(set(self.folds) - set(FOLDS))
        if unknown:
            raise ValueError(f"unknown SmoothQuant folds {unknown}; valid: {list(FOLDS)}")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"SmoothQuant alpha {self.alpha}: must be in (0, 1)")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["folds"] = list(self.folds)
        return d


def is_gemma3(model) -> bool:
    """Whether `model` (a SentenceTransformer) has the Gemma3 layers `smooth_gemma3` edits."""
    auto = getattr(model[0], "auto_model", None)
    return getattr(getattr(auto, "config", None), "model_type", "") in ("gemma3_text", "gemma3")


def input_absmax(model, texts: Sequence[str]) -> dict[str, torch.Tensor]:
    """Per input channel, the largest |activation| entering each nn.Linear, over `texts`
    encoded one at a time (no padding rows in the statistics)."""
    stats: dict[str, torch.Tensor] = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            def hook(mod, inputs, name=name):
                x = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(0).float()
                stats[name] = torch.maximum(stats[name], x) if name in stats else x
            hooks.append(mod.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            for text in texts:
                model.encode([text], prompt="", batch_size=1, show_progress_bar=False)
    finally:
        for h in hooks:
            h.remove()
    return stats


def smooth_gemma3(model, texts: Sequence[str], recipe: SmoothRecipe) -> int:
    """Fold SmoothQuant scales into `model`'s Gemma3 layers, in place; returns the number of
    layers changed. The fp32 function is unchanged up to rounding."""
    if not is_gemma3(model):
        raise ValueError("SmoothQuant folding is implemented for Gemma3 models only")
    stats = input_absmax(model, texts)
    prefix = {id(mod): name for name, mod in model.named_modules()}
    auto = model[0].auto_model
    cfg = auto.config
    groups = cfg.num_attention_heads // cfg.num_key_value_heads

    def scales(act, weight_absmax):
        s = act.clamp(min=1e-5) ** recipe.alpha / weight_absmax.clamp(min=1e-5) ** (1 - recipe.alpha)
        return s.clamp(min=1e-4)

    def fold_into_norm(norm, linears):
        act = stats[prefix[id(linears[0])]]
        w = torch.cat([lin.weight for lin in linears]).abs().amax(0).float()
        s = scales(act, w)
        norm.weight.copy_(((1 + norm.weight.float()) / s - 1).to(norm.weight.dtype))
        for lin in linears:
            lin.weight.mul_(s.to(lin.weight.dtype))

    with torch.no_grad():
        for layer in auto.layers:
            attn, mlp = layer.self_attn, layer.mlp
            if "qkv" in recipe.folds:
                fold_into_norm(layer.input_layernorm, [attn.q_proj, attn.k_proj, attn.v_proj])
            if "gate_up" in recipe.folds:
                fold_into_norm(layer.pre_feedforward_layernorm, [mlp.gate_proj, mlp.up_proj])
            if "v_o" in recipe.folds:
                kv, hd = cfg.num_key_value_heads, cfg.head_dim
                act = stats[prefix[id(attn.o_proj)]].reshape(kv, groups, hd).amax(1)
                w = attn.o_proj.weight.abs().amax(0).float().reshape(kv, groups, hd).amax(1)
                s = scales(act, w)                                               # (kv, hd)
                attn.v_proj.weight.div_(s.reshape(-1, 1).to(attn.v_proj.weight.dtype))
                attn.o_proj.weight.mul_(s[:, None, :].expand(kv, groups, hd).reshape(-1)
                                        .to(attn.o_proj.weight.dtype))
            if "up_down" in recipe.folds:
                s = scales(stats[prefix[id(mlp.down_proj)]],
                           mlp.down_proj.weight.abs().amax(0).float())
                mlp.up_proj.weight.div_(s.reshape(-1, 1).to(mlp.up_proj.weight.dtype))
                mlp.down_proj.weight.mul_(s.to(mlp.down_proj.weight.dtype))
    return len(auto.layers)
