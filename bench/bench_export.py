"""Export benchmark (not a test): what each exported variant costs and how close it stays.

    python bench/bench_export.py MODEL_DIR --out models/NAME [--variants fp32,int8,int4]
    python bench/bench_export.py MODEL_DIR --exported models/NAME      # reuse an export

For the sentence-transformers model in MODEL_DIR and each variant of its export: size on
disk, peak RAM to load a session (a fresh subprocess each: peak RSS minus RSS before
loading), cosine min/mean and top-10 overlap against PyTorch on synthetic notes the gate
never saw, and throughput at 256 tokens (every text cut there) of the runtime Encoder (the
one ONNX runner: its tokenizer, batching and session) vs the PyTorch model (batch 16),
same thread count. Throughput is reported twice:
texts per wall-second (best of --repeat, engines interleaved) and texts per CPU-second of
the process, which stays meaningful on a machine shared with other jobs. Prints a Markdown
table for BENCHMARKS.md; --json writes a record.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# VmHWM, not ru_maxrss: ru_maxrss survives exec, so a child of a big parent would report
# the parent's peak.
_RSS_PROBE = """
import sys
from mimicsearch.session import open_session
def kb(key):
    return int(open("/proc/self/status").read().split(key + ":")[1].split()[0])
before = kb("VmRSS")
s = open_session(sys.argv[1], 1)
print(kb("VmHWM") - before)
"""


def load_ram_mb(path: Path) -> float:
    out = subprocess.run([sys.executable, "-c", _RSS_PROBE, str(path)], check=True,
                         capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("--out", help="export into this directory first")
    ap.add_argument("--exported", help="an existing export of MODEL_DIR")
    ap.add_argument("--variants", default="fp32,int8")
    ap.add_argument("--texts", type=int, default=64, help="held-out notes for cosine/overlap")
    ap.add_argument("--speed-texts", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()

    import torch
    from mimicsearch.export.package import export_model
    from mimicsearch.export.parity import build_parity_set, measure_parity, sample_texts
    from mimicsearch.export.source import load_source

    from mimicsearch.encoder import Encoder
    from mimicsearch.model_manifest import ModelManifest

    torch.set_num_threads(args.threads)
    export_s = None
    if args.out:
        t = time.perf_counter()
        export_model(args.model_dir, args.out, variants=args.variants.split(","))
        export_s = time.perf_counter() - t
    model_dir = Path(args.out or args.exported)
    manifest = ModelManifest.load(model_dir)
    model = load_source(args.model_dir)

    def torch_embed(texts, prompt):
        return model.encode(list(texts), prompt=manifest.prompts.get(prompt) or None,
                            batch_size=16, convert_to_numpy=True, normalize_embeddings=True)

    held_out = sample_texts(args.texts, seed=2024)
    ps = build_parity_set(torch_embed, held_out)

    tokens = min(args.tokens, manifest.max_seq_length)
    long_texts = [" ".join([t] * 8) for t in sample_texts(args.speed_texts, seed=7)]
    model.max_seq_length = tokens
    features = model.preprocess(long_texts)

    def run_torch():
        with torch.inference_mode():
            for i in range(0, len(long_texts), 16):
                model({k: (v[i:i + 16] if isinstance(v, torch.Tensor) else v)
                       for k, v in features.items()})

    engines = {"torch fp32": run_torch}
    rows = {"torch fp32": {"size_mb": None, "load_ram_mb": None}}
    for v in manifest.variants:
        name = f"onnx {v.precision.value}"
        gate = Encoder(model_dir, threads=args.threads, precision=v.precision.value)
        parity = measure_parity(ps, lambda texts, prompt, e=gate: e.encode(list(texts), prompt))
        rows[name] = {"size_mb": v.size_bytes / 1e6, "load_ram_mb": load_ram_mb(model_dir / v.file),
                      "cosine_min": parity.cosine_min, "cosine_mean": parity.cosine_mean,
                      "top10_overlap": parity.top10_overlap, "usable": v.usable}
        fast = Encoder(model_dir, threads=args.threads, precision=v.precision.value,
                       max_length=tokens)
        engines[name] = lambda e=fast: e.encode(long_texts)

    wall = {k: [] for k in engines}
    cpu = {k: [] for k in engines}
    for _ in range(args.repeat):
        for k, fn in engines.items():
            t, c = time.perf_counter(), time.process_time()
            fn()
            wall[k].append(len(long_texts) / (time.perf_counter() - t))
            cpu[k].append(len(long_texts) / (time.process_time() - c))
    base_wall, base_cpu = max(wall["torch fp32"]), max(cpu["torch fp32"])
    for k in engines:
        rows[k].update(texts_per_s=max(wall[k]), x_torch=max(wall[k]) / base_wall,
                       texts_per_cpu_s=max(cpu[k]), x_torch_cpu=max(cpu[k]) / base_cpu)

    print(f"model {args.model_dir} -> {model_dir} | {platform.processor() or platform.machine()}"
          f", {args.threads} threads, {tokens} tokens"
          + (f", export {export_s:.0f}s" if export_s else ""))
    print("| engine | size MB | load RAM MB | cos min | cos mean | top-10 | texts/s | x torch "
          "| texts/CPU-s | x torch (CPU) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for k, r in rows.items():
        def f(key, fmt, r=r):
            return format(r[key], fmt) if r.get(key) is not None else "-"
        print(f"| {k} | {f('size_mb', '.1f')} | {f('load_ram_mb', '.0f')} | "
              f"{f('cosine_min', '.4f')} | {f('cosine_mean', '.4f')} | "
              f"{f('top10_overlap', '.3f')} | {r['texts_per_s']:.1f} | {r['x_torch']:.2f} | "
              f"{r['texts_per_cpu_s']:.1f} | {r['x_torch_cpu']:.2f} |")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(
            {"model": args.model_dir, "exported": str(model_dir), "threads": args.threads,
             "tokens": tokens, "export_s": export_s, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
