"""Filtered-search benchmark (not a test): faiss id selectors vs the earlier over-fetch path.

    python bench/bench_filters.py --rows 200000 --dim 384

Builds Flat, HNSW32 and IVF indexes over clustered unit vectors (bench_index.py's mixture)
and filters them to a share of the rows (a random patient subset, as a `--subject` or
`--where` filter gives). For each, runs the same single queries (one thread, as the CLI
runs them, best of 3 passes) through

  now        NoteIndex.search: exact on decoded vectors up to 8,192 allowed rows; else, when
             most rows pass (OVERFETCH_SHARE), one unfiltered search of 1.5k/share rows,
             and faiss with an IDSelectorBitmap for the rest (tombstones in the bitmap)
  selector   the same with the selector for every query
  earlier    the path it replaced: the same exact shortcut, else search 1.5k·n/allowed rows
             unfiltered, drop what the filter rejects, grow 4x until k pass

and prints ms/query and recall@10 of each against the exact filtered answer. Rows of each table come from
one run on one machine; compare the two columns, not machines.
"""
from __future__ import annotations

import argparse
import functools
import math
import platform
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
from bench_index import clustered

from mimicsearch.index import ArraySource, BuildOptions, build_index, loaded, open_index
from mimicsearch.index.faiss_ops import merge_topk


def overfetch(ix, q, k, allowed):
    """The filtered search mimicsearch ran before id selectors (kept here to compare)."""
    n_allowed = int(allowed.sum())
    if n_allowed <= loaded.EXACT_SUBSET_ROWS:
        return ix._search_subset(q, k, np.flatnonzero(allowed))
    ntotal = max(ix.ntotal, 1)
    fetch = min(ntotal, max(2 * k, math.ceil(1.5 * k * ntotal / n_allowed)))
    while True:
        D, I = ix._search_all(q, fetch)
        ok = (I >= 0) & allowed[np.clip(I, 0, None)]
        D, I = merge_topk(np.where(ok, D, -np.inf), np.where(ok, I, -1), k)
        short = (I < 0).any(axis=1) if n_allowed >= k else np.zeros(len(q), bool)
        if not short.any() or fetch >= ntotal:
            break
        fetch = min(ntotal, fetch * 4)
    if short.any() and n_allowed <= loaded.SUBSET_FALLBACK_ROWS:
        D2, I2 = ix._search_subset(q[short], k, np.flatnonzero(allowed))
        D[short], I[short] = D2, I2
    return D, I


def per_query(fn, q, k, allowed, repeats: int = 3) -> tuple[float, np.ndarray]:
    """(ms per single query, best of `repeats` passes; the ids of the last pass)."""
    faiss.omp_set_num_threads(1)
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        out = np.vstack([fn(q[i:i + 1], k, allowed)[1] for i in range(len(q))])
        best = min(best, time.perf_counter() - t)
    return 1000 * best / len(q), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--keys", default="Flat;HNSW32,Flat;IVF1024,Flat",
                   help="faiss factory keys, separated by ;")
    p.add_argument("--selectivity", default="0.01,0.05,0.1,0.25,0.5")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    k = 10
    x = clustered(args.rows + args.queries, args.dim, 200, args.seed)
    data, q = x[:args.rows], x[args.rows:]
    patients = np.arange(args.rows) // 20  # 20 notes a patient
    rng = np.random.default_rng(args.seed)
    meta = pa.table({"id": np.arange(args.rows, dtype=np.int64)})
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text() if cpuinfo.exists() else ""
    isa = [f for f in ("avx512_vnni", "avx512f", "avx2", "amx_int8") if f in flags]
    print(f"{args.rows} x {args.dim} clustered, {args.queries} single queries, k={k}, "
          f"1 thread; {platform.processor() or platform.machine()} ({', '.join(isa)})\n")
    print("| index | allowed | ms/q now | selector only | earlier over-fetch | now vs earlier "
          "| recall@10 now / selector / earlier |")
    print("|---|---|---|---|---|---|---|")
    keys = args.keys.split(";")
    with tempfile.TemporaryDirectory() as tmp:
        for key in keys:
            out = Path(tmp) / key.replace(",", "_")
            build_index(ArraySource(data, meta), out, model_fingerprint="bench",
                        options=BuildOptions(index_key=key, recall_target=0.95),
                        progress=False)
            ix = open_index(out)
            for sel in map(float, args.selectivity.split(",")):
                chosen = rng.choice(patients.max() + 1, int(sel * (patients.max() + 1)),
                                    replace=False)
                allowed = np.isin(patients, chosen)
                t_new, i_new = per_query(ix.search, q, k, allowed)
                shares = dict(loaded.OVERFETCH_SHARE), loaded.OVERFETCH_SHARE_DEFAULT
                loaded.OVERFETCH_SHARE.clear()
                loaded.OVERFETCH_SHARE_DEFAULT = 2.0  # never: the selector alone
                t_sel, i_sel = per_query(ix.search, q, k, allowed)
                loaded.OVERFETCH_SHARE.update(shares[0])
                loaded.OVERFETCH_SHARE_DEFAULT = shares[1]
                t_old, i_old = per_query(functools.partial(overfetch, ix), q, k, allowed)
                scores = q @ data.T
                scores[:, ~allowed] = -np.inf
                exact = np.argsort(-scores, axis=1)[:, :k]
                r_new, r_sel, r_old = (
                    np.mean([len(set(a) & set(e)) / k for a, e in zip(i, exact)])
                    for i in (i_new, i_sel, i_old))
                print(f"| {key} {ix.manifest.search_params or ''} | {sel:.0%} "
                      f"({int(allowed.sum())}) | {t_new:.2f} | {t_sel:.2f} | {t_old:.2f} | "
                      f"{t_old / t_new:.2f}x | {r_new:.3f} / {r_sel:.3f} / {r_old:.3f} |",
                      flush=True)


if __name__ == "__main__":
    main()
