"""The fp32 ONNX graph of a whole sentence-transformers pipeline.

optimum's exporter does the job for `library_name="sentence_transformers"`: it traces the
full `SentenceTransformer.forward` (transformer, pooling, Dense layers, Normalize) with
dynamic batch and sequence axes and outputs `token_embeddings` and `sentence_embedding`.
This module pins the call, removes the attention softmax NaN guards (simplify.py), gathers
the result into one self-contained file and checks the graph's contract.
"""
from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path

import onnx

from mimicsearch.fileio import atomic_path

from .fuse import HEAD_DIM_KEY, HEADS_KEY, KV_HEADS_KEY
from .simplify import drop_softmax_nan_guards

log = logging.getLogger(__name__)

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "sentence_embedding"
OPSET = 18
_PROTOBUF_LIMIT = 2 * 1024**3


def export_graph(model, path: str | os.PathLike, opset: int = OPSET) -> Path:
    """Export `model` (a loaded SentenceTransformer, fp32, CPU) to one .onnx file at `path`."""
    from optimum.exporters.onnx import onnx_export_from_model
    from torch.jit import TracerWarning

    path = Path(path)
    # The tracer's warnings are about Python branches frozen into the graph, and the
    # exporter's about negative gather indices; the parity gate checks the result on other
    # batch sizes and lengths, which is what they warn about. optimum's tied-weight check
    # (it asks for accelerate) finds nothing to share in a sentence-transformers model.
    dedup = logging.getLogger("optimum.exporters.onnx.base")
    level = dedup.level
    with tempfile.TemporaryDirectory(prefix="mimicsearch-export-") as tmp, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        dedup.setLevel(logging.ERROR)
        try:
            onnx_export_from_model(model, tmp, opset=opset, task="feature-extraction",
                                   library_name="sentence_transformers", do_validation=False)
        finally:
            dedup.setLevel(level)
        proto = onnx.load(str(Path(tmp) / "model.onnx"), load_external_data=True)
    log.info("removed %d attention NaN guards", drop_softmax_nan_guards(proto))
    heads = getattr(getattr(model[0], "auto_model", None), "config", None)
    if getattr(heads, "num_attention_heads", None):
        n = heads.num_attention_heads
        onnx.helper.set_model_props(proto, {
            HEADS_KEY: str(n),
            KV_HEADS_KEY: str(getattr(heads, "num_key_value_heads", None) or n),
            HEAD_DIM_KEY: str(getattr(heads, "head_dim", None) or heads.hidden_size // n)})
    if proto.ByteSize() >= _PROTOBUF_LIMIT:
        raise ValueError(f"the exported graph is {proto.ByteSize() / 1e9:.1f} GB, over ONNX's "
                         "2 GB single-file limit; models this large are not supported yet")
    with atomic_path(path) as tmp_path:
        onnx.save(proto, str(tmp_path))
    return path


def check_graph(path: str | os.PathLike, dimension: int) -> None:
    """Raise unless the graph takes (input_ids, attention_mask) with dynamic batch and sequence
    and returns `sentence_embedding` of width `dimension`."""
    proto = onnx.load(str(path), load_external_data=False)
    inputs = {i.name: i for i in proto.graph.input}
    outputs = {o.name: o for o in proto.graph.output}
    missing = [n for n in INPUT_NAMES if n not in inputs]
    if missing or OUTPUT_NAME not in outputs:
        raise ValueError(f"{path}: graph inputs {sorted(inputs)} / outputs {sorted(outputs)}; "
                         f"expected inputs {list(INPUT_NAMES)} and output {OUTPUT_NAME!r}")
    for name in INPUT_NAMES:
        dims = inputs[name].type.tensor_type.shape.dim
        if len(dims) != 2 or any(d.HasField("dim_value") for d in dims):
            raise ValueError(f"{path}: input {name} has shape "
                             f"{[d.dim_value or d.dim_param for d in dims]}; expected 2 dynamic "
                             "axes (batch, sequence)")
    dims = outputs[OUTPUT_NAME].type.tensor_type.shape.dim
    width = dims[-1].dim_value if dims else 0
    if len(dims) != 2 or width != dimension:
        raise ValueError(f"{path}: {OUTPUT_NAME} has shape "
                         f"{[d.dim_value or d.dim_param for d in dims]}; expected "
                         f"[batch, {dimension}]")
