"""IdSet benchmark (not a test): anonymous memory and time per id as the id map grows.

    python bench/bench_idset.py --ids 5000000

Looks up and inserts `--ids` distinct string ids (the costlier kind) the way the Reader
does, sampling RssAnon every 50 ms, and reports at 1M, 3M and the end: anonymous memory
over the start (now and peak, merges included), runs (spilled ones are memory-mapped
files) and seconds so far.
"""
from __future__ import annotations

import argparse
import re
import tempfile
import threading
import time
from pathlib import Path

from mimicsearch.idset import IdSet


def anon_mb() -> float:
    return int(re.search(r"RssAnon:\s+(\d+)", Path("/proc/self/status").read_text())[1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ids", type=int, default=5_000_000)
    args = ap.parse_args()
    peak, stop = [0.0], threading.Event()

    def sample():
        while not stop.wait(0.05):
            peak[0] = max(peak[0], anon_mb())

    threading.Thread(target=sample, daemon=True).start()
    marks = {1_000_000, 3_000_000, args.ids}
    print("| ids | anonymous MB now | anonymous MB peak | runs (spilled) | seconds |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        seen = IdSet(spill_dir=tmp)
        base, t0 = anon_mb(), time.perf_counter()
        for i in range(args.ids):
            key = f"note-{i:012d}"
            if seen.get(key) is None:
                seen[key] = i
            if i + 1 in marks:
                spilled = sum(r.spilled for r in seen._runs)
                print(f"| {i + 1:,} | {anon_mb() - base:.0f} | {peak[0] - base:.0f} | "
                      f"{len(seen._runs)} ({spilled}) | {time.perf_counter() - t0:.0f} |",
                      flush=True)
        seen.close()
    stop.set()


if __name__ == "__main__":
    main()
