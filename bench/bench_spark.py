"""Spark engine scaling benchmark (not a test): notes/s with 1 and 2 local cores.

    python bench/bench_spark.py --model models/minilm --n 2000 --cores 1 2 --repeat 2

For each core count a fresh `local[N]` Spark session (its own JVM, in a subprocess) encodes
the same synthetic notes with `embed_dataframe` (N tasks at a time, one ORT thread each,
4·N partitions) into a no-op sink. A warm-up job first loads the model in every Python
worker, so the timed jobs measure encoding, not start-up; the best of `--repeat` runs is
kept. The local Encoder with the same thread count is timed in the same subprocess as a
reference: the gap between the two is Spark's overhead (Arrow transfer, task scheduling).
Prints a Markdown table and, with --json, one record.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))


def run_one(model: str, n: int, cores: int, repeat: int, mix: str, precision: str | None) -> dict:
    """Time one core count inside this process (called in a subprocess by main)."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    from bench_encode import synthetic_notes

    from mimicsearch.encoder import Encoder
    from mimicsearch.spark import embed_dataframe, spark_session

    texts = synthetic_notes(n, mix)
    t = time.perf_counter()
    spark = spark_session(f"local[{cores}]", app_name=f"bench-{cores}", conf={
        "spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": str(4 * cores)})
    spark.sparkContext.setLogLevel("ERROR")
    startup = time.perf_counter() - t
    df = spark.createDataFrame(list(enumerate(texts)), "id long, TEXT string")
    df = df.repartition(4 * cores).cache()
    df.count()

    def job(frame):
        t = time.perf_counter()
        embed_dataframe(frame, model, precision=precision, threads=1).write.format(
            "noop").mode("overwrite").save()
        return time.perf_counter() - t

    warm = job(df.limit(8 * cores).repartition(2 * cores))
    spark_s = min(job(df) for _ in range(repeat))
    spark.stop()

    enc = Encoder(model, threads=cores, precision=precision)
    enc.encode(texts[:32])
    local_s = min(_timed(lambda: enc.encode(texts)) for _ in range(repeat))
    return {"cores": cores, "notes": n, "spark_s": round(spark_s, 2),
            "spark_notes_per_s": round(n / spark_s, 1), "local_s": round(local_s, 2),
            "local_notes_per_s": round(n / local_s, 1), "session_start_s": round(startup, 1),
            "warmup_job_s": round(warm, 1), "precision": enc.variant.precision.value}


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="exported model directory")
    p.add_argument("--n", type=int, default=2000, help="notes")
    p.add_argument("--cores", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--mix", choices=["full", "mimic"], default="full")
    p.add_argument("--precision", default=None, help="fp32 or int8 (default: the model's)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run one core count
    a = p.parse_args()
    if a.one:
        print(json.dumps(run_one(a.model, a.n, a.one, a.repeat, a.mix, a.precision)))
        return
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    records = []
    for cores in a.cores:
        cmd = [sys.executable, __file__, "--model", a.model, "--n", str(a.n), "--one",
               str(cores), "--repeat", str(a.repeat), "--mix", a.mix]
        if a.precision:
            cmd += ["--precision", a.precision]
        out = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"run with {cores} core(s) failed:\n{out.stderr[-3000:]}")
        records.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = records[0]
    print(f"{a.n} notes ({a.mix} mix, {base['precision']}), {platform.processor() or 'cpu'}, "
          f"{os.cpu_count()} logical CPUs, load {os.getloadavg()[0]:.1f}")
    print("| local[N] | Spark notes/s | speed-up | local Encoder (N threads) notes/s | "
          "Spark / local |")
    print("|---|---|---|---|---|")
    for r in records:
        print(f"| {r['cores']} | {r['spark_notes_per_s']} | "
              f"{r['spark_notes_per_s'] / base['spark_notes_per_s']:.2f}x | "
              f"{r['local_notes_per_s']} | "
              f"{r['spark_notes_per_s'] / r['local_notes_per_s']:.2f} |")
    if a.json:
        print(json.dumps({"bench": "spark", "mix": a.mix, "runs": records,
                          "load": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
