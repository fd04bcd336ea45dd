"""Load benchmark of `mimicsearch serve` (not a test): loopback only, a fixed request count.

    python bench/bench_serve.py --model models/minilm --requests 192

Builds an index of synthetic notes (or takes --index), times the encoder alone by batch
size, then starts servers on 127.0.0.1 — batching with each --waits value, and
--no-batching (one request per encoder call) — and sends each the same fixed number of
requests to POST /search (one query text) and POST /v1/embeddings (one note, or one query, each), from
1, 8 and 32 concurrent clients, the servers taking turns cell by cell so that the
machine's drift hits all alike. Prints per cell: requests/s, p50 and p99 latency, 5xx
count; and each server's resident memory before and after. The gain of batching is the
ratio of throughputs in this one run; clients share the machine with the servers, so
compare rows, not machines.
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

from mimicsearch.cpu import cpu_flags


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


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


def encoder_alone(model_dir: Path, sets: dict[str, list[str]]) -> None:
    """Texts/s of the served model by batch size (best of 2): what batching can gain."""
    from mimicsearch.encoder import Encoder

    enc = Encoder(model_dir)
    enc.encode(next(iter(sets.values()))[:16])
    sizes = (1, 2, 4, 8, 16, 32)
    print(f"encoder alone ({enc.precision}), texts/s by batch size:")
    print("| texts | mean tokens | " + " | ".join(f"batch {b}" for b in sizes) + " |")
    print("|---|---|" + "---|" * len(sizes))
    for name, texts in sets.items():
        texts = texts[:128]
        tokens = sum(enc.token_counts(texts)) / len(texts)
        cells = []
        for b in sizes:
            best = 0.0
            for _ in range(2):
                t0 = time.perf_counter()
                for i in range(0, len(texts), b):
                    enc.encode(texts[i:i + b])
                best = max(best, len(texts) / (time.perf_counter() - t0))
            cells.append(f"{best:.0f}")
        print(f"| {name} | {tokens:.0f} | " + " | ".join(cells) + " |")
    print()


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
    ap.add_argument("--repeat", type=int, default=2, help="turns per cell (best kept)")
    ap.add_argument("--waits", default="5,0", type=lambda v: v.split(","),
                    help="--batch-wait-ms values of the batching servers")
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
              f"flags: {cpu_flags()}; {args.requests} requests per cell, loopback\n")
        from mimicsearch.index import IndexManifest

        model_dir = args.model or Path(IndexManifest.load(args.index).model_dir)
        encoder_alone(model_dir, {"queries (120 chars)": queries,
                                  "notes (600 chars)": texts})
        servers = [(f"batching, wait {w} ms", ["--batch-wait-ms", w]) for w in args.waits]
        servers.append(("one at a time", ["--no-batching"]))
        running = {name: start(args.index, tmp / f"{i}.log", *extra)
                   for i, (name, extra) in enumerate(servers)}
        results, memory = {}, {}
        try:
            model = httpx.get(next(iter(running.values())).url + "/v1/models").json()
            model = model["data"][0]["id"]
            routes = {  # label: (route, bodies)
                "/search": ("/search", [{"text": q, "k": 10} for q in queries]),
                "/v1/embeddings, a note": ("/v1/embeddings",
                                           [{"input": t, "model": model} for t in texts]),
                "/v1/embeddings, a query": ("/v1/embeddings", [
                    {"input": q, "model": model, "input_type": "query"} for q in queries])}
            for name, served in running.items():
                memory[name] = [rss_mb(served.proc.pid)]
                for url, pool in routes.values():
                    asyncio.run(load(served.url, url, pool[:16], 4))  # warm up
            for route, (url, pool) in routes.items():
                bodies = [pool[i % len(pool)] for i in range(args.requests)]
                for c in levels:
                    for _ in range(args.repeat):  # servers take turns: drift hits all alike
                        for name, served in running.items():
                            r = asyncio.run(load(served.url, url, bodies, c))
                            best = results.get((name, route, c))
                            if best is None or r["rps"] > best["rps"]:
                                results[name, route, c] = {**r, "5xx": r["5xx"] + (
                                    best["5xx"] if best else 0)}
                            elif r["5xx"]:
                                best["5xx"] += r["5xx"]
            for name, served in running.items():
                memory[name].append(rss_mb(served.proc.pid))
        finally:
            for served in running.values():
                stop(served)
        print(f"{args.requests} requests per cell, best of {args.repeat} turns; 5xx summed")
        print("| server | route | clients | req/s | p50 ms | p99 ms | 5xx |")
        print("|---|---|---|---|---|---|---|")
        for (name, route, c), r in results.items():
            print(f"| {name} | {route} | {c} | {r['rps']:.1f} | {r['p50']:.1f} | "
                  f"{r['p99']:.1f} | {r['5xx']} |")
        print("\nserver memory (RSS MB) after warm-up → after all cells: " + ", ".join(
            f"{name} {a:.0f} → {b:.0f}" for name, (a, b) in memory.items()))
        print("\nbatching's gain (req/s with batching / one at a time, same run):")
        for route in routes:
            for name, _ in servers[:-1]:
                base = {c: results["one at a time", route, c]["rps"] for c in levels}
                gains = [f"{c} clients {results[name, route, c]['rps'] / base[c]:.2f}x"
                         for c in levels]
                print(f"  {route} ({name}): " + ", ".join(gains))


if __name__ == "__main__":
    main()
