"""The one place a graph is compiled to run: onnxruntime sessions for the Encoder, the
export's graph tools and the benchmarks, all with the same CPU settings; and the Runner the
Encoder calls, over onnxruntime or OpenVINO."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
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


class Runner:
    """One compiled graph behind the Encoder's one call: feed in, named output back. The
    onnxruntime and OpenVINO engines differ only here."""

    input_names: list[str]
    output_names: list[str]

    def run(self, output: str, feed: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError


class OnnxRunner(Runner):
    def __init__(self, model: str | os.PathLike, threads: int | None):
        self.session = open_session(model, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, output: str, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run([output], feed)[0]


class OpenVinoRunner(Runner):
    """OpenVINO's CPU plugin, one stream (the Encoder batches), `threads` threads; `config`
    comes from the manifest (e.g. its dynamic activation quantization group), so the
    runtime compiles the graph the way the parity gate measured it."""

    def __init__(self, model: str | os.PathLike, threads: int | None,
                 config: dict[str, str] | None = None):
        import openvino as ov

        core = ov.Core()
        settings = {"NUM_STREAMS": "1", "PERFORMANCE_HINT": "LATENCY", **(config or {})}
        if threads is not None:
            settings["INFERENCE_NUM_THREADS"] = str(threads)
        # bf16 (the plugin's choice on AVX-512 BF16 and AMX hosts) keeps fp32's range; fp16,
        # its choice on some ARM hosts, overflows EmbeddingGemma's activations.
        if core.get_property("CPU", "INFERENCE_PRECISION_HINT") == ov.Type.f16:
            settings.setdefault("INFERENCE_PRECISION_HINT", "f32")
        try:
            self.compiled = core.compile_model(str(model), "CPU", settings)
        except RuntimeError as e:
            # The plugin's bf16 kernels (AMX hosts) refuse some layer shapes, e.g. its fused
            # MLP wants K in whole register blocks; f32 compiles every graph.
            if "INFERENCE_PRECISION_HINT" in settings or \
                    core.get_property("CPU", "INFERENCE_PRECISION_HINT") != ov.Type.bf16:
                raise
            warnings.warn(f"OpenVINO could not compile {Path(model).name} in bf16 on this "
                          f"host ({str(e).strip().splitlines()[-1]}); running it in f32",
                          RuntimeWarning, stacklevel=2)
            settings["INFERENCE_PRECISION_HINT"] = "f32"
            self.compiled = core.compile_model(str(model), "CPU", settings)
        self.request = self.compiled.create_infer_request()
        self.input_names = [i.get_any_name() for i in self.compiled.inputs]
        self.output_names = [o.get_any_name() for o in self.compiled.outputs]

    def run(self, output: str, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self.request.infer(feed)[self.compiled.output(output)].copy()


def open_runner(model: str | os.PathLike, threads: int | None, runtime: str = "onnxruntime",
                config: dict[str, str] | None = None) -> Runner:
    if runtime == "openvino":
        return OpenVinoRunner(model, threads, config)
    if runtime != "onnxruntime":
        raise ValueError(f"runtime {runtime!r}; valid: 'onnxruntime', 'openvino'")
    return OnnxRunner(model, threads)
