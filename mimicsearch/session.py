"""The one place an onnxruntime session is built: the runtime Encoder, the export's graph
tools and the benchmarks all open ONNX files here, with the same CPU settings."""
from __future__ import annotations

import os

import onnxruntime as ort

LEVELS = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
          "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
          "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


def open_session(model: str | os.PathLike, threads: int | None = None, *, level: str = "all",
                 optimized_path: str | os.PathLike | None = None,
                 profile_prefix: str | None = None) -> ort.InferenceSession:
    """A CPU session over `model`. threads: intra-op threads (None: onnxruntime's default).
    optimized_path: also write the graph optimized at `level` there. profile_prefix: write
    an onnxruntime profile (JSON) with that prefix."""
    if level not in LEVELS:
        raise ValueError(f"optimization level {level!r}; valid: {sorted(LEVELS)}")
    so = ort.SessionOptions()
    so.graph_optimization_level = LEVELS[level]
    if threads is not None:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # The Encoder's token budget bounds every tensor's size, so the arena stops growing after
    # the first few batches (measured: RSS flat at ~418 MB over 30 mixed-shape MiniLM
    # batches). Without it each batch maps fresh pages: 33x the page faults, 20x the system
    # time, and a higher peak (745 vs 418 MB).
    so.enable_cpu_mem_arena = True
    so.log_severity_level = 3
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
