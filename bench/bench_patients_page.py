"""What the page's patients view waits for (not a test): loopback only, a fixed request count.

    python bench/bench_patients_page.py runs/demo-index --requests 60

Starts `mimicsearch serve INDEX` on 127.0.0.1 and sends, one at a time as the page does,
the requests behind each patients-view action: a text search in each mode
(POST /patients/search, k 20), "Similar patients" on a patient (the same route with a
subject_id), opening a patient's course (GET /patients/{id}/timeline) and a cohort export
of its top 5 (POST /cohorts/export). Prints p50/p95/max latency per action, measured at the
client over HTTP, with the host's CPU flags; the first request of each action is a warm-up
and not counted.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from fixtures.server import start, stop

from mimicsearch.cpu import cpu_flags
from mimicsearch.search import Searcher

QUERIES = ["chest pain radiating to the left arm, troponin rising",
           "worsening shortness of breath, bilateral pleural effusions, on furosemide",
           "sepsis on vasopressors, lactate elevated", "new onset atrial fibrillation on warfarin",
           "acute kidney injury, creatinine rising", "hip fracture after a fall",
           "pneumonia with hypoxia, intubated", "gastrointestinal bleed, transfused"]


def timed(call, n: int) -> list[float]:
    call(0)  # warm-up
    out = []
    for i in range(1, n + 1):
        t0 = time.perf_counter()
        r = call(i)
        out.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, r.text
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("index", type=Path)
    ap.add_argument("--requests", type=int, default=60, help="Timed requests per action.")
    args = ap.parse_args()
    lib = Searcher(args.index, verify=False)
    subjects = sorted({n.subject for n in lib.notes(lib.ids()[::50], text=False)})
    print(f"index {args.index}: {len(lib.ids())} notes, {len(set(subjects))}+ patients; "
          f"host {platform.machine()}, CPU flags: {cpu_flags()}")
    with tempfile.TemporaryDirectory() as tmp:
        served = start(args.index, Path(tmp) / "server.log")
        try:
            with served.client() as c:
                actions = {
                    f"text, {mode}": lambda i, mode=mode: c.post("/patients/search", json={
                        "text": QUERIES[i % len(QUERIES)], "mode": mode, "k": 20})
                    for mode in ("dense", "lexical", "hybrid")}
                actions["similar patients (subject)"] = lambda i: c.post(
                    "/patients/search", json={"subject_id": subjects[i % len(subjects)],
                                              "k": 20})
                actions["patient course (timeline)"] = lambda i: c.get(
                    f"/patients/{subjects[i % len(subjects)]}/timeline")
                actions["cohort export, 20 patients CSV"] = lambda i: c.post(
                    "/cohorts/export", json={"text": QUERIES[i % len(QUERIES)], "k": 20,
                                             "format": "csv"})
                print(f"{'action':32} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
                for name, call in actions.items():
                    ms = sorted(timed(call, args.requests))
                    p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))]
                    print(f"{name:32} {statistics.median(ms):8.1f} {p95:8.1f} {ms[-1]:8.1f}")
        finally:
            stop(served)


if __name__ == "__main__":
    main()
