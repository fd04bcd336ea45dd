"""The README's Python example runs as written and prints what its comments say."""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def block(marker: str) -> str:
    text = README.read_text(encoding="utf-8")
    m = re.search(rf"<!-- {marker} -->\n```python\n(.*?)```", text, re.DOTALL)
    assert m, f"README has no python block after <!-- {marker} -->"
    return m.group(1)


def test_the_nightly_job_example_runs_as_written(tmp_path, synth_dir, minilm_onnx,
                                                 monkeypatch, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "models").mkdir()
    (tmp_path / "data" / "demo").symlink_to(synth_dir)
    (tmp_path / "models" / "minilm").symlink_to(minilm_onnx)
    monkeypatch.chdir(tmp_path)
    code = block("nightly-job")
    ns: dict = {}
    exec(compile(code, str(README), "exec"), ns)  # noqa: S102 (the README, run as written)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "200 200 0"
    assert out[1] == "50 1 1 198"
    hits = ns["hits"]
    assert len(hits) == 5  # MIMIC writes "Physician " with a space: matched all the same
    assert {c.strip() for c in hits.CATEGORY} <= {"Nursing/other", "Physician"}
    assert str(hits.HADM_ID.dtype) == "Int64" and str(hits.SUBJECT_ID.dtype) == "Int64"
    assert all(str(d) >= "2100-01-01" for d in hits.CHARTDATE)
    assert 12 not in ns["searcher"].ids() and len(ns["searcher"].ids()) == 249
