"""Index benchmark (not a test): auto-chosen indexes vs exact search on clustered vectors.

    python bench/bench_index.py --rows 1000000 --dim 768 --budgets none,3G,1G

For each memory budget, builds the index `build-index` would choose (recall target 0.95),
then measures on held-out queries drawn from the same mixture: build seconds, index bytes
on disk, recall@10 against exact search, and ms/query (single queries, one thread, as the
CLI runs them; and batched, all threads). Prints a Markdown table for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa

from mimicsearch.index import ArraySource, BuildOptions, build_index, open_index, parse_bytes


def clustered(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """Unit vectors around `clusters` random centres with uneven sizes and spreads, closer
    to real embeddings (topics of different size and tightness) than uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    sizes = rng.dirichlet(np.full(clusters, 0.7))
    which = rng.choice(clusters, n, p=sizes)
    spread = rng.uniform(0.3, 1.2, clusters).astype(np.float32)
    x = np.empty((n, dim), np.float32)
    for i in range(0, n, 100_000):
        w = which[i:i + 100_000]
        noise = rng.standard_normal((len(w), dim)).astype(np.float32)
        x[i:i + len(w)] = centres[w] + spread[w, None] * noise
    faiss.normalize_L2(x)
    return x


def timed_search(index, q: np.ndarray, k: int, single: bool) -> tuple[float, np.ndarray]:
    """(ms per query, ids): `index` is a faiss index or a NoteIndex (same search())."""
    if single:
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        t = time.perf_counter()
        out = np.vstack([index.search(q[i:i + 1], k)[1] for i in range(len(q))])
        faiss.omp_set_num_threads(before)
    else:
        t = time.perf_counter()
        out = index.search(q, k)[1]
    return 1000 * (time.perf_counter() - t) / len(q), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--budgets", default="none,3G,1G",
                   help="Comma-separated --memory values; 'none' = no budget.")
    p.add_argument("--out", type=Path, default=None, help="Write results as JSON here.")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    t = time.perf_counter()
    data = clustered(args.rows + args.queries, args.dim, args.clusters, args.seed)
    x, q = data[: args.rows], data[args.rows:]
    print(f"data: {args.rows} x {args.dim} in {time.perf_counter() - t:.1f} s", flush=True)
    meta = pa.table({"id": np.arange(args.rows, dtype=np.int64)})
    k = 10

    t = time.perf_counter()
    exact = faiss.IndexFlatIP(args.dim)
    exact.add(x)
    exact_build = time.perf_counter() - t
    ms_exact_1, _ = timed_search(exact, q[:200], k, True)
    ms_exact_b, true_i = timed_search(exact, q, k, False)
    rows = [{"index": "Flat (exact)", "budget": "-", "build_s": round(exact_build, 1),
             "bytes": int(x.nbytes), "recall_at_10": 1.0, "ms_single": round(ms_exact_1, 3),
             "ms_batched": round(ms_exact_b, 4), "search_params": {}}]
    del exact

    for budget in args.budgets.split(","):
        memory = None if budget == "none" else parse_bytes(budget)
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            m = build_index(ArraySource(x, meta), Path(tmp) / "ix", model_fingerprint="bench",
                            options=BuildOptions(memory_bytes=memory), progress=False)
            build_s = time.perf_counter() - t
            ix = open_index(Path(tmp) / "ix")
            ms_1, _ = timed_search(ix, q[:200], k, True)
            ms_b, got = timed_search(ix, q, k, False)
            recall = float(np.mean([len(set(g) & set(e)) / k for g, e in zip(got, true_i)]))
            rows.append({"index": m.index_key, "budget": budget, "build_s": round(build_s, 1),
                         "bytes": sum(f.size_bytes for f in m.files()),
                         "recall_at_10": round(recall, 4), "ms_single": round(ms_1, 3),
                         "ms_batched": round(ms_b, 4), "search_params": m.search_params,
                         "self_measured_recall": m.quality.recall_at_10})
        print(json.dumps(rows[-1]), flush=True)

    print(f"\n{args.rows} x {args.dim} clustered ({args.clusters} clusters), "
          f"{args.queries} held-out queries, {platform.processor() or platform.machine()}, "
          f"{faiss.omp_get_max_threads()} threads\n")
    print("| index | --memory | build s | size MiB | recall@10 | ms/query (1 thread) | "
          "ms/query (batched) | params |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['index']} | {r['budget']} | {r['build_s']} | {r['bytes'] / 2**20:.0f} | "
              f"{r['recall_at_10']:.3f} | {r['ms_single']} | {r['ms_batched']} | "
              f"{r['search_params'] or '-'} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
