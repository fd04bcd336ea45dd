"""Load benchmark of `mimicsearch serve` (not a test): loopback only, a fixed request count.

    python bench/bench_serve.py --model models/minilm --requests 192

Builds an index of synthetic notes (or takes --index), then starts the server twice on
127.0.0.1 — batching on (the default) and --no-batching (one request per encoder call) —
and for each sends the same fixed number of requests to POST /search (one query text) and
POST /v1/embeddings (one note each), from 1, 8 and 32 concurrent clients. Prints per cell:
requests/s, p50 and p99 latency, 5xx count, and the server's resident memory before and
after. The gain of batching is the ratio of the two servers' throughput in this one run;
clients share the machine with the server, so compare rows, not machines.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from fixtures.server import start, stop


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_flags() -> str:
    try:
        flags = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines()
                     if ln.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    return " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "amx_int8") if f in flags)


async def load(url: str, route: str, bodies: list[dict], concurrency: int) -> dict:
    latencies, statuses = [], []
    queue = list(bodies)

    async def client(c: httpx.AsyncClient):
        while queue:
            body = queue.pop()
            t0 = time.perf_counter()
            r = await c.post(route, json=body)
            latencies.append(time.perf_counter() - t0)
            statuses.append(r.status_code)

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c) for _ in range(concurrency)))
        seconds = time.perf_counter() - t0
    lat = sorted(latencies)
    return {"rps": len(lat) / seconds, "p50": statistics.median(lat) * 1000,
            "p99": lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000,
            "5xx": sum(s >= 500 for s in statuses), "ok": sum(s == 200 for s in statuses)}


def build(model: Path, out: Path, patients: int) -> Path:
    data = out / "data"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "mimicsearch", "synth", "--patients", str(patients),
                    "--seed", "0", "--out", str(data)], check=True, env=env)
    subprocess.run([sys.executable, "-m", "mimicsearch", "build-index",
                    str(data / "NOTEEVENTS.csv"), "--model", str(model), "--out",
                    str(out / "ix"), "--no-progress"], check=True, env=env)
    return out / "ix"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="exported model (to build the index)")
    ap.add_argument("--index", type=Path, help="an index to serve instead of building one")
    ap.add_argument("--patients", type=int, default=60)
    ap.add_argument("--requests", type=int, default=192, help="requests per cell")
    ap.add_argument("--concurrency", default="1,8,32")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.index is None:
            if args.model is None:
                ap.error("give --model (to build an index) or --index")
            args.index = build(args.model, tmp, args.patients)
        import pandas as pd

        notes = pd.read_csv(tmp / "data" / "NOTEEVENTS.csv") if (tmp / "data").is_dir() \
            else None
        texts = (notes.TEXT.str.slice(0, 600).tolist() if notes is not None else
                 ["Patient with worsening dyspnea and bilateral pleural effusions."] * 64)
        queries = [t[:120] for t in texts]
        print(f"host: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
              f"flags: {cpu_flags()}; {args.requests} requests per cell, loopback")
        print("| server | route | clients | req/s | p50 ms | p99 ms | 5xx "
              "| RSS MB before → after |")
        print("|---|---|---|---|---|---|---|---|")
        results = {}
        for name, extra in (("batching", []), ("one at a time", ["--no-batching"])):
            served = start(args.index, tmp / f"{name}.log", *extra)
            try:
                model = httpx.get(served.url + "/v1/models").json()["data"][0]["id"]
                routes = {"/search": [{"text": q, "k": 10} for q in queries],
                          "/v1/embeddings": [{"input": t, "model": model} for t in texts]}
                for route, pool in routes.items():
                    asyncio.run(load(served.url, route, pool[:16], 4))  # warm up
                    for c in levels:
                        bodies = [pool[i % len(pool)] for i in range(args.requests)]
                        before = rss_mb(served.proc.pid)
                        r = asyncio.run(load(served.url, route, bodies, c))
                        after = rss_mb(served.proc.pid)
                        results[name, route, c] = r
                        print(f"| {name} | {route} | {c} | {r['rps']:.1f} | {r['p50']:.1f} | "
                              f"{r['p99']:.1f} | {r['5xx']} | {before:.0f} → {after:.0f} |",
                              flush=True)
            finally:
                stop(served)
        print("\nbatching's gain (req/s with batching / one at a time, same run):")
        for route in ("/search", "/v1/embeddings"):
            ratio = {c: results["batching", route, c]["rps"]
                     / results["one at a time", route, c]["rps"] for c in levels}
            gains = [f"{c} clients {r:.2f}x" for c, r in ratio.items()]
            print(f"  {route}: " + ", ".join(gains))


if __name__ == "__main__":
    main()
