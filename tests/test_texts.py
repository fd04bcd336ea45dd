"""Whole note texts in the index: written beside each store part, hashed in the manifest,
read by row, kept through add/sync/remove, once per note in windows mode, and left out
with --no-full-text. Real faiss indexes, real MiniLM sessions."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from fixtures.vectors import unit

from mimicsearch.index import ArraySource, BuildOptions, add_to_index, build_index, open_index
from mimicsearch.index.texts import BATCH_ROWS
from mimicsearch.options import EncodeOptions
from mimicsearch.pipeline import build_index_from, sync_notes
from mimicsearch.search import Searcher

N = 3 * BATCH_ROWS + 7
pytestmark = pytest.mark.filterwarnings("ignore::mimicsearch.pipeline.TruncationWarning")


def corpus(n: int, first_id: int = 0):
    rng = np.random.default_rng(first_id)
    texts = [f"Note {first_id + i}. " + "word " * int(rng.integers(1, 400)) + "\n  end ü"
             for i in range(n)]
    meta = pa.table({"id": np.arange(first_id, first_id + n, dtype=np.int64),
                     "SUBJECT_ID": [str(i % 5) for i in range(n)], "TEXT": texts})
    return unit(rng.standard_normal((n, 16))), meta, texts


def test_round_trip_across_parts_and_batches(tmp_path):
    x, meta, texts = corpus(N)
    build_index(ArraySource(x, meta), tmp_path / "ix", model_fingerprint="f",
                options=BuildOptions(index_key="Flat", shard_size=80), progress=False)
    index = open_index(tmp_path / "ix")
    assert len(index.manifest.store_parts) > 1
    assert all(p.text is not None for p in index.manifest.store_parts)
    rows = [0, 1, BATCH_ROWS - 1, BATCH_ROWS, 79, 80, 81, N - 1]
    assert index.store.texts.get(rows) == [texts[r] for r in rows]
    assert index.store.texts.get([N + 5]) == [None]
    assert {p.text.file for p in index.manifest.store_parts} <= {
        f.file for f in index.manifest.files()}

    x2, meta2, texts2 = corpus(10, first_id=N)
    add_to_index(x2, meta2, index_dir=tmp_path / "ix")
    s = Searcher(tmp_path / "ix")
    got = s.notes([N + 3, 5])
    assert [n.text for n in got] == [texts2[3], texts[5]]


def test_a_tampered_texts_file_is_refused(tmp_path):
    x, meta, _ = corpus(20)
    build_index(ArraySource(x, meta), tmp_path / "ix", model_fingerprint="f",
                options=BuildOptions(index_key="Flat"), progress=False)
    part = open_index(tmp_path / "ix").manifest.store_parts[0]
    path = tmp_path / "ix" / part.text.file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256|corrupt|modified"):
        open_index(tmp_path / "ix")


@pytest.fixture(scope="module")
def long_notes(synth_dir, tmp_path_factory):
    df = pd.read_csv(synth_dir / "NOTEEVENTS.csv", nrows=40)
    path = tmp_path_factory.mktemp("texts") / "notes.csv"
    df.to_csv(path, index=False)
    return path, df


def test_windows_keep_each_text_once_and_sync_edits_it(long_notes, minilm_onnx, tmp_path):
    path, df = long_notes
    ix = tmp_path / "ix"
    build_index_from(path, out_dir=ix, model_dir=minilm_onnx,
                     encode=EncodeOptions(max_length=32, precision="fp32", long="windows",
                                          snippets=True, full_text=True),
                     build=BuildOptions(index_key="Flat"), progress=False)
    store = open_index(ix).store
    windows = store.table.column("window").to_numpy()
    assert (windows > 0).any()
    texts = store.texts.get(range(len(store)))
    assert all(t is None for t, w in zip(texts, windows) if w > 0)
    assert sum(t is not None for t in texts) == len(df)
    s = Searcher(ix)
    assert [n.text for n in s.notes(df.ROW_ID[:5])] == df.TEXT[:5].tolist()

    edited = df.copy()
    edited.loc[3, "TEXT"] += " Addendum: seen again."
    sync_notes(edited, index_dir=ix, progress=False)
    assert s.notes([edited.ROW_ID[3]])[0].text == edited.TEXT[3]


def test_no_full_text_keeps_openings_only(long_notes, minilm_onnx, tmp_path):
    path, df = long_notes
    ix = tmp_path / "ix"
    build_index_from(path, out_dir=ix, model_dir=minilm_onnx,
                     encode=EncodeOptions(max_length=32, precision="fp32", snippets=True),
                     build=BuildOptions(index_key="Flat"), progress=False)
    assert not list(ix.rglob("*.text.arrow"))
    note = Searcher(ix).notes([df.ROW_ID[0]])[0]
    assert note.text is None and note.snippet and df.TEXT[0].startswith(note.snippet[:30])
