"""Where an exported graph spends its time (not a test): onnxruntime's per-node profile.

    python bench/profile_ops.py /work/eg/eg-default/model_int8.onnx --batch 8 --tokens 256

Runs the graph on random token ids (all attended), one warm-up then `--runs` timed runs,
and prints the share of kernel time per op type and per node, with layer numbers folded
(`layers.N`) so the 24 copies of one MatMul add up.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import tempfile
import time

import numpy as np

from mimicsearch.session import open_session


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="an .onnx file")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()

    session = open_session(args.model, args.threads, profile_prefix=os.path.join(
        tempfile.mkdtemp(prefix="ortprof-"), "p"))
    rng = np.random.default_rng(0)
    shape = (args.batch, args.tokens)
    feed = {"input_ids": rng.integers(10, 20000, shape).astype(np.int64),
            "attention_mask": np.ones(shape, np.int64)}
    session.run(None, feed)
    t = time.perf_counter()
    for _ in range(args.runs):
        session.run(None, feed)
    print(f"{(time.perf_counter() - t) / args.runs:.3f} s per run of {shape}")
    path = session.end_profiling()
    with open(path) as f:
        events = json.load(f)
    os.remove(path)

    by_op, by_node = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"].get("op_name")
            by_op[op] += e["dur"]
            node = re.sub(r"layers\.\d+", "layers.N", e["name"].removesuffix("_kernel_time"))
            by_node[(op, node)] += e["dur"]
    total = sum(by_op.values())
    print("\n| op type | share |\n|---|---|")
    for op, d in by_op.most_common(15):
        print(f"| {op} | {d / total:.1%} |")
    print("\n| node (layers folded) | op | share |\n|---|---|---|")
    for (op, node), d in by_node.most_common(args.top):
        print(f"| {node} | {op} | {d / total:.1%} |")


if __name__ == "__main__":
    main()
