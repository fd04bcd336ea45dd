"""Fuzz the command line itself: random option values (k, ids, filters, dates, encodings,
paths) and manifests with fields of the wrong JSON type. Whatever comes in, a command exits
0, 1, 2 or 75, never with a traceback, and a failed command leaves the index as it was.
Examples are bounded for CI; `make soak` raises them via MIMICSEARCH_FUZZ_EXAMPLES."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mimicsearch.cli import main

EXAMPLES = int(os.environ.get("MIMICSEARCH_FUZZ_EXAMPLES", "60")) // 3
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                derandomize="MIMICSEARCH_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
EXIT_CODES = {0, 1, 2, 75}


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".lock" and not p.name.endswith("-new")}


@pytest.fixture(scope="module")
def index(synth_dir, minilm_onnx, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("fuzzcli")
    pd.read_csv(synth_dir / "NOTEEVENTS.csv", nrows=30).to_csv(d / "n.csv", index=False)
    r = CliRunner().invoke(main, ["build-index", str(d / "n.csv"), "--model",
                                  str(minilm_onnx), "--out", str(d / "ix"), "--no-progress"])
    assert r.exit_code == 0, r.output
    return d / "ix"


def check(args: list[str], ix: Path) -> None:
    before = tree(ix)
    r = CliRunner().invoke(main, args)
    assert r.exit_code in EXIT_CODES, (args, r.output)
    assert r.exception is None or isinstance(r.exception, SystemExit), (args, r.exception)
    assert "Traceback" not in r.output, (args, r.output)
    if r.exit_code != 0:
        assert tree(ix) == before, args  # a failure changes nothing


text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30) | \
    st.sampled_from(["", " ", "\x00", "1e9", "-1", "9" * 30, "HADM_ID=", "=1", "CHARTDATE>=x",
                     "SUBJECT_ID<=2", "CATEGORY=ECG,,", "x!=", "\udcff", "2150-02-30"])
number = st.integers(-(2**70), 2**70).map(str) | text


@FUZZ
@given(k=number, where=st.lists(text, max_size=2), since=text, subject=number,
       category=text, note=number)
def test_query_options(index, k, where, since, subject, category, note):
    args = ["query", str(index), "--note-id", note, "-k", k, "--subject", subject,
            "--category", category, "--since", since]
    for w in where:
        args += ["--where", w]
    check(args, index)


@FUZZ
@given(ids=st.lists(number, min_size=1, max_size=3), missing=st.sampled_from(["error",
                                                                              "ignore", "x"]),
       raw=st.binary(max_size=40))
def test_remove_options(index, tmp_path_factory, ids, missing, raw):
    ix = tmp_path_factory.mktemp("rm") / "ix"
    shutil.copytree(index, ix)
    ids_file = ix.parent / "ids.txt"
    ids_file.write_bytes(raw)
    check(["remove", str(ix), "--missing", missing, *[a for i in ids for a in ("--ids", i)]],
          ix)
    check(["remove", str(ix), "--ids-file", str(ids_file)], ix)


JSON = st.recursive(st.none() | st.booleans() | st.integers(-5, 2**40) | st.floats() |
                    st.text(max_size=8), lambda inner: st.lists(inner, max_size=3) |
                    st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)


@FUZZ
@given(data=st.data())
def test_manifests_with_wrong_json_types(index, tmp_path_factory, data):
    ix = tmp_path_factory.mktemp("mf") / "ix"
    shutil.copytree(index, ix)
    which = data.draw(st.sampled_from([ix / "manifest.json", ix / "embeddings" /
                                       "manifest.json"]))
    d = json.loads(which.read_text())
    key = data.draw(st.sampled_from(sorted(d)))
    d[key] = data.draw(JSON)
    which.write_text(json.dumps(d))
    for args in (["info", str(ix)], ["query", str(ix), "--note-id", "3"], ["ids", str(ix)],
                 ["remove", str(ix), "--ids", "3"]):
        check(args, ix)
