"""Memory benchmark (not a test): does `encode` stay flat as the corpus grows?

    python bench/bench_memory.py --model tiny --rows 50000,500000,2000000

For each size, writes a CSV of short distinct notes (string ids, the costlier kind for the
duplicate-id map) and encodes it in a fresh subprocess; reports RSS once the model is loaded
and warm, the peak during the encode (Linux: VmHWM, reset through /proc/self/clear_refs)
split into anonymous memory and file-backed pages (the id map's memory-mapped runs, which
the kernel reclaims under pressure; sampled every 0.2 s), VmData for reference (virtual:
thread arenas and stacks, which is why RLIMIT_DATA cannot cap this run), and what the corpus would cost held in Python objects (measured on a
sample: a list of (id, text) tuples). Any exported model directory works; `tiny` exports
the test suite's tiny random Gemma3 (needs the export extra), which keeps the run about
reading, batching and bookkeeping rather than matrix products.
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

RUN = """
import json, re, sys, threading
from pathlib import Path
from mimicsearch.corpus import encode_corpus
from mimicsearch.encoder import Encoder

def kb(field):
    return int(re.search(field + r":\\s+(\\d+)", Path("/proc/self/status").read_text())[1])

def sample(peaks, stop):
    while not stop.wait(0.2):
        for f in ("RssAnon", "RssFile", "VmData"):
            peaks[f] = max(peaks.get(f, 0), kb(f))

encoder = Encoder(sys.argv[2], threads=1)
encoder.encode(["warm up the session"] * 64)
Path("/proc/self/clear_refs").write_text("5")  # peak RSS from here on: the corpus's share
start, peaks, stop = kb("VmRSS"), {}, threading.Event()
sampler = threading.Thread(target=sample, args=(peaks, stop), daemon=True)
sampler.start()
s = encode_corpus(sys.argv[1], model_dir=sys.argv[2], out_dir=sys.argv[3], progress=False, shard_size=50000, batch_size=1024, encoder=encoder)
stop.set()
sampler.join()
print(json.dumps({"encoded": s.encoded, "rejected": s.rejected, "seconds": s.seconds,
                  "start_mb": start / 1024, "rss_mb": kb("VmHWM") / 1024,
                  "anon_mb": peaks["RssAnon"] / 1024, "file_mb": peaks["RssFile"] / 1024,
                  "data_mb": peaks["VmData"] / 1024}))
"""

WORDS = ["stable", "denies", "chest", "pain", "fever", "cough", "dyspnea", "afebrile",
         "tolerating", "diet", "sinus", "rhythm", "creatinine", "improved", "lasix", "held"]


def note(i: int) -> tuple[str, str]:
    words = " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(8))
    return f"note-{i:012d}", f"Patient {i}: {words}."


def python_bytes_per_row(sample: int = 20000) -> float:
    rows = [note(i) for i in range(sample)]
    total = sys.getsizeof(rows) + sum(sys.getsizeof(r) + sys.getsizeof(r[0]) + sys.getsizeof(r[1])
                                      for r in rows)
    return total / sample


def tiny_model(tmp: Path) -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from fixtures.models import build_tiny_gemma
    from mimicsearch.export.package import export_model

    out = tmp / "tiny-onnx"
    export_model(build_tiny_gemma(tmp), out, variants=["int8"], parity_texts=24,
                 progress=False)
    return str(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="exported model directory, or tiny")
    ap.add_argument("--rows", default="50000,500000,2000000")
    args = ap.parse_args()
    per_row = python_bytes_per_row()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        model = tiny_model(Path(tmp)) if args.model == "tiny" else args.model
        for n in (int(x) for x in args.rows.split(",")):
            src = Path(tmp) / f"notes-{n}.csv"
            with open(src, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["note_id", "text"])
                w.writerows(note(i) for i in range(n))
            r = subprocess.run([sys.executable, "-c", RUN, str(src), model,
                                str(Path(tmp) / f"out-{n}")],
                               check=False, capture_output=True, text=True)
            if r.returncode:
                raise SystemExit(f"encode of {n:,} rows failed:\n"
                                 + r.stderr[-2000:])
            got = json.loads(r.stdout)
            assert got["encoded"] == n and got["rejected"] == 0, got
            got.update(rows=n, csv_mb=src.stat().st_size / 1e6,
                       python_objects_mb=n * per_row / 1e6)
            results.append(got)
            print(json.dumps(got), file=sys.stderr, flush=True)
            src.unlink()
    print("| rows | CSV MB | corpus as Python objects MB | RSS before MB | peak RSS MB | "
          "growth MB | peak anonymous MB | peak file-backed MB | peak VmData MB | rows/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for g in results:
        print(f"| {g['rows']:,} | {g['csv_mb']:.0f} | {g['python_objects_mb']:.0f} | "
              f"{g['start_mb']:.0f} | {g['rss_mb']:.0f} | {g['rss_mb'] - g['start_mb']:+.0f} | "
              f"{g['anon_mb']:.0f} | {g['file_mb']:.0f} | {g['data_mb']:.0f} | "
              f"{g['encoded'] / g['seconds']:,.0f} |")


if __name__ == "__main__":
    main()
