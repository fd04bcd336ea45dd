"""Operator fusions onnxruntime's own session optimizer does not find in our graphs.

The session optimizer fuses erf GELU and RMS norms, but not the tanh GELU that Gemma3
computes in eleven element-wise ops. The fusion passes behind onnxruntime's transformer
optimizer do, and they work on any graph (the optimizer itself refuses model types it does
not know, Gemma3 among them), so the ones that apply are run here one by one.
"""
from __future__ import annotations

import collections

import onnx

FUSED_OPS = ("FastGelu",)


def fuse_graph(model: onnx.ModelProto) -> dict[str, int]:
    """Fuse `model` in place (tanh GELU -> FastGelu); returns the fused ops' node counts."""
    from onnxruntime.transformers.fusion_fastgelu import FusionFastGelu
    from onnxruntime.transformers.onnx_model import OnnxModel

    wrapped = OnnxModel(model)
    FusionFastGelu(wrapped).apply()
    wrapped.prune_graph()
    counts = collections.Counter(n.op_type for n in model.graph.node)
    return {op: counts[op] for op in FUSED_OPS if counts[op]}
