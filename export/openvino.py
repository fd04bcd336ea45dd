"""The OpenVINO variant: the exported graph read by OpenVINO, every projection's weights int8
per output channel (NNCF's weight compression), activations quantized per token at run time
by OpenVINO's CPU plugin (its dynamic quantization, in groups of 128 input channels).

Why this recipe: on EmbeddingGemma-300m (256 tokens, 2 threads, AVX-512 VNNI) it ran
faster than onnxruntime with our per-token int8 at a higher cosine to PyTorch (0.998 against
0.996) and needs no calibration. It is not batch-independent: in the plugin's dynamic
quantization a call's other rows, padding included, move a note's vector (EmbeddingGemma:
copies of one note in a batch agree exactly, but padding it to the next power of two gives
cosine down to 0.9992; 0.9997 at group 32; bench/probe_padding.py). With dynamic
quantization off it is shape-stable in f32, at about onnxruntime's fp32 speed. So the
export records the alone-vs-batch cosine and the runtime does not default to it.
NNCF's static quantization ran faster still but only under our floor (cosine min 0.991
with every MatMul, 0.995 with the down projections left out).
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path

# The plugin's activation groups along K: 128 was the most accurate of the fast settings
# (32: default, slower; 256/384: no faster, lower cosine).
RUNTIME_CONFIG = {"DYNAMIC_QUANTIZATION_GROUP_SIZE": "128"}


def export_openvino(raw_onnx: str | os.PathLike, xml: str | os.PathLike) -> dict:
    """Write `xml` and its `.bin` (int8 weights) from the exported fp32 ONNX graph; returns
    the recipe for the manifest."""
    try:
        import nncf
        import openvino as ov
    except ImportError:
        raise ImportError("the openvino-int8 variant needs OpenVINO and NNCF: "
                          "pip install 'mimicsearch[openvino]'") from None
    logging.getLogger("nncf").setLevel(logging.ERROR)
    model = ov.convert_model(str(raw_onnx))
    with contextlib.redirect_stdout(io.StringIO()):  # NNCF's progress bar has no switch
        compressed = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_SYM)
    ov.save_model(compressed, str(xml), compress_to_fp16=False)
    return {"weights": "int8 symmetric per output channel (NNCF compress_weights INT8_SYM)",
            "activations": "per token, dynamic (OpenVINO CPU plugin)",
            "openvino": ov.__version__.split("-")[0], "nncf": nncf.__version__}


def weights_file(xml: str | os.PathLike) -> Path:
    return Path(xml).with_suffix(".bin")
