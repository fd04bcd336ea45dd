"""NNCF's static int8 quantization of the exported graph against our onnxruntime int8 (not a
test, not an export variant): is it faster at the same accuracy, on this host?

    python bench/probe_openvino_static.py --source /work/eg/embeddinggemma-300m \\
        --model /work/eg/eg-main --ignore '.*down_proj.*' \\
        --ignore '.*down_proj.*;.*self_attn/MatMul.*;^/\\d+/linear/MatMul$'

Exports the source model's raw graph (the one the openvino-int8 variant starts from), runs
`nncf.quantize` (model type transformer, its own SmoothQuant, `--calibration` synthetic
MIMIC-mix notes one at a time) once per `--ignore` (regexes joined by `;`, the MatMuls left
unquantized), and times each result in OpenVINO's CPU plugin (the runtime's settings) beside
the export's onnxruntime int8, on the same fixed batches of 16 synthetic notes cut at 256
tokens with the manifest's document prompt. Cosine is every note against the export's fp32;
"padded" is the worst cosine of 12 short notes alone against each padded to the next power
of two, the most the Encoder pads a note.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", required=True, help="the sentence-transformers model directory")
    ap.add_argument("--model", required=True, help="its export (model_fp32/int8.onnx)")
    ap.add_argument("--ignore", action="append", required=True, metavar="REGEX[;REGEX]")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--calibration", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import nncf
    import openvino as ov
    from bench_encode import synthetic_notes
    from mimicsearch.export.graph import export_graph
    from mimicsearch.export.source import load_source
    from tokenizers import Tokenizer

    from mimicsearch.cpu import cpu_flags
    from mimicsearch.model_manifest import ModelManifest
    from mimicsearch.session import OnnxRunner, OpenVinoRunner

    logging.getLogger("nncf").setLevel(logging.ERROR)
    model_dir = Path(args.model)
    m = ModelManifest.load(model_dir)
    tok = Tokenizer.from_file(str(model_dir / m.tokenizer_file))
    tok.no_padding()
    tok.enable_truncation(256)
    prefix = m.prompts.get("document", "")

    def ids(texts: list[str]) -> list[list[int]]:
        return [e.ids for e in tok.encode_batch([prefix + t for t in texts])]

    def feed(rows: list[list[int]], width: int | None = None) -> dict[str, np.ndarray]:
        width = width or max(map(len, rows))
        return {"input_ids": np.array([r + [m.pad_token_id] * (width - len(r)) for r in rows],
                                      np.int64),
                "attention_mask": np.array([[1] * len(r) + [0] * (width - len(r))
                                            for r in rows], np.int64)}

    texts = synthetic_notes(args.n, "full", seed=3)
    rows = ids(texts)
    feeds = [feed(rows[i:i + 16]) for i in range(0, len(rows), 16)]
    short = ids([" ".join(t.split()[:w]) for t, w in
                 zip(texts, (5, 9, 14, 20, 30, 41, 55, 70, 90, 120, 150, 180))])
    out = m.output_name
    with tempfile.TemporaryDirectory(prefix="ov-static-") as tmp:
        raw = export_graph(load_source(args.source), Path(tmp) / "raw.onnx")
        calib = [feed([r]) for r in ids(synthetic_notes(args.calibration, "mimic", seed=7))]
        engines = {"onnxruntime int8 (the export's)":
                   OnnxRunner(model_dir / "model_int8.onnx", args.threads)}
        for patterns in args.ignore:
            start = time.perf_counter()
            quantized = nncf.quantize(
                ov.convert_model(str(raw)), nncf.Dataset(calib),
                model_type=nncf.ModelType.TRANSFORMER, subset_size=args.calibration,
                ignored_scope=nncf.IgnoredScope(patterns=patterns.split(";")))
            xml = Path(tmp) / f"static{len(engines)}.xml"
            ov.save_model(quantized, str(xml), compress_to_fp16=False)
            engines[f"openvino static, not quantized: {patterns} "
                    f"({time.perf_counter() - start:.0f} s)"] = OpenVinoRunner(xml, args.threads)
        ref = np.concatenate([OnnxRunner(model_dir / "model_fp32.onnx", args.threads)
                              .run(out, f) for f in feeds])
        print(f"{args.n} notes at 256 tokens, batches of 16, {args.threads} threads; "
              f"flags: {cpu_flags()}")
        print("| engine | texts/s | cosine to fp32, min / mean | padded, min |\n|---|---|---|---|")
        for name, runner in engines.items():
            runner.run(out, feeds[0])
            start = time.perf_counter()
            got = np.concatenate([runner.run(out, f) for f in feeds])
            speed = len(texts) / (time.perf_counter() - start)
            cos = (got * ref).sum(axis=1)
            alone = np.concatenate([runner.run(out, feed([r])) for r in short])
            padded = np.concatenate([runner.run(out, feed([r], _pow2(len(r)))) for r in short])
            print(f"| {name} | {speed:.2f} | {cos.min():.4f} / {cos.mean():.4f} | "
                  f"{(alone * padded).sum(axis=1).min():.5f} |", flush=True)


def _pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


if __name__ == "__main__":
    main()
