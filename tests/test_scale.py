"""The scale benchmark's own checks at a size the suite can afford: the project's notes with
stand-in vectors, built, synced twice with 1% churn (15,000 new notes on the first night
being most of this corpus), compacted; after each, the top-100 lexical answers of 200
queries equal segments written from scratch over the same live notes, score for score.
`python bench/bench_scale.py --notes 2100000` runs the same at MIMIC-III's size."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_scale.py"


def test_sync_and_compact_answer_as_a_rebuild_at_30k_notes(tmp_path):
    steps = "corpus,build,sync,check,sync2,check2,compact,recheck"
    r = subprocess.run([sys.executable, str(BENCH), "--notes", "30000", "--work",
                        str(tmp_path), "--steps", steps], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
    assert r.returncode == 0 and "failed" not in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results) == steps.split(",")
    for check in ("check", "check2", "recheck"):
        assert results[check]["identical_top100"] == results[check]["queries"] == 200
        assert results[check]["max_rel_score_diff"] == 0.0
    assert results["sync"]["added"] == 20_000 and results["sync"]["removed"] == 6_000
    assert results["sync2"]["live_notes"] == results["sync"]["live_notes"] + 14_000
    assert results["compact"]["segments"] == 1
    assert results["compact"]["documents"] == results["sync2"]["live_notes"]
