"""The nightly ETL job: tables in, sync with edits and retractions, typed metadata, counts
that add up, fresh reads, kill -9 during sync. Real MiniLM sessions, real faiss indexes."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from mimicsearch.encoder import Encoder
from mimicsearch.filters import Filters
from mimicsearch.index import BuildOptions, IndexManifest, open_index, remove_from_index
from mimicsearch.options import EncodeOptions
from mimicsearch.pipeline import add_notes, build_index_from, sync_notes
from mimicsearch.search import Searcher

ENCODE = EncodeOptions(max_length=32, precision="fp32", snippets=True)
FLAT = BuildOptions(index_key="Flat")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def notes(synth_dir) -> pd.DataFrame:
    """80 synthetic notes as pandas reads them: HADM_ID has gaps, so it is float64."""
    df = pd.read_csv(synth_dir / "NOTEEVENTS.csv", nrows=80)
    assert df["HADM_ID"].dtype == np.float64 and df["HADM_ID"].isna().any()
    return df


def night_two(df: pd.DataFrame) -> tuple[pd.DataFrame, list, list, list]:
    """Night one's first 60 notes minus 2 retracted, 2 edited, plus 3 new ones."""
    night = df.iloc[:60].copy()
    retracted = night.ROW_ID.iloc[[3, 17]].tolist()
    edited = night.ROW_ID.iloc[[5, 40]].tolist()
    night.loc[night.ROW_ID.isin(edited), "TEXT"] += " Addendum: patient seen again today."
    night = pd.concat([night[~night.ROW_ID.isin(retracted)], df.iloc[60:63]])
    return night, retracted, edited, df.ROW_ID.iloc[60:63].tolist()


def live(ix) -> dict:
    """What a user sees of an index: per live note, its metadata, hash and vector."""
    index = open_index(ix)
    store = index.store
    rows = np.flatnonzero(store.live)
    vecs = index.reconstruct(rows)
    out = {}
    for r, v in zip(store.records(rows), vecs):
        meta = {k: r[k] for k in store.metadata_columns}
        out[r["id"]] = (r["text_hash"], json.dumps(meta, default=str), np.round(v, 4).tolist())
    return out


@pytest.fixture(scope="module")
def night_one(notes, minilm_onnx, tmp_path_factory):
    ix = tmp_path_factory.mktemp("etl") / "ix"
    s = build_index_from(notes.iloc[:60], out_dir=ix, model_dir=minilm_onnx, encode=ENCODE,
                         build=FLAT, progress=False)
    return ix, s


def test_a_dataframe_builds_an_index_with_integer_ids_that_filter(night_one, notes):
    ix, s = night_one
    assert (s.read, s.encoded, s.rejected, s.added, s.live_notes) == (60, 60, 0, 60, 60)
    store = Searcher(ix).index.store
    assert store.metadata_columns["HADM_ID"] == pa.int64()
    assert store.metadata_columns["SUBJECT_ID"] == pa.int64()
    assert store.metadata_columns["CHARTDATE"] == pa.date32()
    hadm = int(notes.HADM_ID.dropna().iloc[0])
    rec = store.records(np.arange(60))
    assert hadm in [r["HADM_ID"] for r in rec]  # 134690, not "134690.0"
    s = Searcher(ix)
    hits = s.search_notes([int(notes.ROW_ID.iloc[0])], k=60,
                          filters=Filters(where=[f"HADM_ID={hadm}"]))[0]
    want = set(notes.ROW_ID[notes.HADM_ID == hadm]) - {int(notes.ROW_ID.iloc[0])}
    assert {h.id for h in hits} == want and all(h.admission == hadm for h in hits)
    subject = int(notes.SUBJECT_ID.iloc[0])
    hits = s.search_notes([int(notes.ROW_ID.iloc[0])], k=60,
                          filters=Filters(subjects=[str(subject)]))[0]
    assert {h.id for h in hits} == set(notes.ROW_ID[(notes.SUBJECT_ID == subject)].iloc[:60]) \
        - {int(notes.ROW_ID.iloc[0])}
    df = Searcher(ix).search_notes([int(notes.ROW_ID.iloc[1])], k=5).to_pandas()
    assert str(df["HADM_ID"].dtype) == "Int64" and len(df) == 5


def test_every_kind_of_table_gives_the_same_index(notes, minilm_onnx, tmp_path, night_one):
    """pyarrow Table, RecordBatchReader and any object with __arrow_c_stream__."""
    table = pa.Table.from_pandas(notes.iloc[:60], preserve_index=False)

    class Stream:  # what polars and other Arrow libraries hand over
        def __arrow_c_stream__(self, requested_schema=None):
            return table.__arrow_c_stream__(requested_schema)

    want = live(night_one[0])
    for i, source in enumerate([table, pa.RecordBatchReader.from_batches(
            table.schema, table.to_batches(max_chunksize=7)), Stream()]):
        build_index_from(source, out_dir=tmp_path / str(i), model_dir=minilm_onnx,
                         encode=ENCODE, build=FLAT, progress=False)
        assert live(tmp_path / str(i)) == want


def test_sync_adds_edits_and_retracts_in_one_commit(night_one, notes, minilm_onnx,
                                                    tmp_path):
    import shutil

    ix = tmp_path / "ix"
    shutil.copytree(night_one[0], ix)
    night, retracted, edited, _new = night_two(notes)
    before = Searcher(ix)  # a long-lived reader, opened before the sync
    assert set(retracted) <= set(before.ids())
    kept = sync_notes(night, index_dir=ix, progress=False)  # without --remove-missing
    assert (kept.read, kept.unchanged, kept.edited, kept.added, kept.removed, kept.absent) == (
        61, 56, 2, 3, 0, 2)
    assert kept.read == kept.encoded + kept.rejected + kept.unchanged
    s = sync_notes(night, index_dir=ix, remove_missing=True, progress=False)
    assert (s.read, s.encoded, s.unchanged, s.removed, s.live_notes) == (61, 0, 61, 2, 61)
    assert not set(retracted) & set(before.ids())  # the old Searcher sees it
    vec = open_index(night_one[0]).reconstruct(np.array([3]))  # a retracted note's vector
    (hits,) = before.search_vectors(vec, k=61)
    assert not set(retracted) & {h.id for h in hits} and len(hits) == 61
    # the edited notes carry the new text's vectors
    enc = Encoder(minilm_onnx, precision="fp32", max_length=32)
    texts = night.set_index("ROW_ID").loc[edited, "TEXT"].tolist()
    index = open_index(ix)
    rows, _ = index.store.rows_of(edited)
    np.testing.assert_allclose(index.reconstruct(rows), enc.encode(texts), atol=1e-5)
    # a finished sync re-run changes nothing, not even the manifest
    manifest = (ix / "manifest.json").read_bytes()
    again = sync_notes(night, index_dir=ix, remove_missing=True, progress=False)
    assert (again.encoded, again.unchanged, again.added) == (0, 61, 0)
    assert (ix / "manifest.json").read_bytes() == manifest


def test_counts_add_up_on_hostile_input(night_one, notes, tmp_path, minilm_onnx):
    import shutil

    ix = tmp_path / "ix"
    shutil.copytree(night_one[0], ix)
    bad = notes.iloc[60:70].copy().astype({"TEXT": object})
    bad.iloc[0, bad.columns.get_loc("TEXT")] = None
    bad.iloc[1, bad.columns.get_loc("TEXT")] = "   "
    bad = pd.concat([bad, bad.iloc[[4]]])  # a duplicate id
    s = add_notes(bad, index_dir=ix, progress=False)
    assert (s.read, s.encoded, s.rejected) == (11, 8, 3) and s.added == 8
    rejects = pd.read_csv(s.rejects_file)
    assert rejects.line.tolist() == [1, 2, 11]  # row numbers of the table
    assert [r.split(" (")[0] for r in rejects.reason] == ["missing text", "empty text",
                                                          "duplicate id"]
    with pytest.raises(ValueError, match=r"8 notes of the table have ids already in the "
                                         r"index.*`sync` replaces edited notes"):
        add_notes(bad, index_dir=ix, progress=False)
    s = sync_notes(pd.concat([notes.iloc[:60], bad]), index_dir=ix, progress=False)
    assert (s.read, s.unchanged, s.rejected, s.encoded) == (71, 68, 3, 0)
    assert pd.read_csv(s.rejects_file).line.tolist() == [61, 62, 71]
    b = build_index_from(bad, out_dir=tmp_path / "new", model_dir=minilm_onnx, encode=ENCODE,
                         build=FLAT, progress=False)
    assert (b.read, b.encoded, b.rejected, b.added) == (11, 8, 3, 8)
    assert pd.read_csv(b.rejects_file).line.tolist() == [1, 2, 11]


def test_a_searcher_never_returns_a_note_removed_by_another_process(night_one, tmp_path):
    import shutil

    ix = tmp_path / "ix"
    shutil.copytree(night_one[0], ix)
    s = Searcher(ix)
    victim = s.ids()[10]
    vec = s.index.reconstruct(s.index.store.rows_of([victim])[0])
    assert s.search_vectors(vec, k=1)[0][0].id == victim
    subprocess.run([sys.executable, "-m", "mimicsearch", "remove", str(ix), "--ids",
                    str(victim)], check=True, env=ENV, capture_output=True)
    assert victim not in {h.id for h in s.search_vectors(vec, k=5)[0]}
    static = Searcher(ix, watch=False)
    subprocess.run([sys.executable, "-m", "mimicsearch", "remove", str(ix), "--ids",
                    str(s.ids()[0])], check=True, env=ENV, capture_output=True)
    assert static.reload() is True and static.reload() is False


def test_sync_killed_anywhere_then_rerun_equals_an_uninterrupted_sync(night_one, notes,
                                                                      tmp_path):
    import random
    import shutil
    import signal
    import time

    night, *_ = night_two(notes)
    snapshot = tmp_path / "night2.csv"
    night.to_csv(snapshot, index=False)
    cmd = [sys.executable, "-m", "mimicsearch", "sync", None, str(snapshot),
           "--remove-missing", "--no-progress"]
    ref = tmp_path / "ref"
    shutil.copytree(night_one[0], ref)
    subprocess.run([*cmd[:4], str(ref), *cmd[5:]], check=True, env=ENV, capture_output=True)
    want = live(ref)
    seeds = int(os.environ.get("MIMICSEARCH_CRASH_SEEDS", "2"))
    for seed in range(seeds):
        ix = tmp_path / f"k{seed}"
        shutil.copytree(night_one[0], ix)
        proc = subprocess.Popen([*cmd[:4], str(ix), *cmd[5:]], env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(random.Random(seed).uniform(0.5, 4.0))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        r = subprocess.run([*cmd[:4], str(ix), *cmd[5:], "--json"], env=ENV, check=False,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert live(ix) == want
        IndexManifest.load(ix)
        assert not list(ix.glob(".adding-*")) and not list(ix.glob("shard-*.tmp*"))


def test_cli_sync_and_distinct_exit_codes(night_one, notes, tmp_path):
    import shutil

    from click.testing import CliRunner
    from fixtures.locks import lock_held_elsewhere

    from mimicsearch.cli import main

    ix = tmp_path / "ix"
    shutil.copytree(night_one[0], ix)
    night, retracted, *_ = night_two(notes)
    snapshot = tmp_path / "night2.csv"
    night.to_csv(snapshot, index=False)
    run = CliRunner().invoke
    r = run(main, ["sync", str(ix), str(snapshot), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "read 61 rows: 5 encoded, 0 rejected, 56 unchanged" in r.output
    assert "3 added, 2 edited, 0 removed, 2 not in the snapshot (kept; --remove-missing" \
        in r.output
    r = run(main, ["query", str(ix), "--note-id", str(night.ROW_ID.iloc[0]), "--category",
                   "Radiologyy"])
    assert r.exit_code == 1 and "not in this index; valid:" in r.output
    r = run(main, ["query", str(ix), "--note-id", str(night.ROW_ID.iloc[0]), "--where",
                   "HADMID=1"])
    assert r.exit_code == 1 and "no column 'HADMID'" in r.output
    r = run(main, ["remove", str(ix), "--ids", str(retracted[0]), "--ids", "424242",
                   "--missing", "ignore", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["missing_ids"] == [424242]
    r = run(main, ["remove", str(ix), "--ids", "424242"])
    assert r.exit_code == 1 and "--missing ignore" in r.output
    with lock_held_elsewhere(ix):
        r = run(main, ["remove", str(ix), "--ids", str(retracted[1])])
        assert r.exit_code == 75 and "being written by another process" in r.output
    r = run(main, ["query", str(ix)])
    assert r.exit_code == 2
    r = run(main, ["ids", str(ix), "--json"])
    assert retracted[0] not in json.loads(r.stdout) and len(json.loads(r.stdout)) == 62


def test_encoder_conveniences_of_a_sentence_transformers_user(minilm_onnx):
    enc = Encoder(minilm_onnx, precision="fp32", max_length=64)
    assert (enc.dimension, enc.max_seq_length, enc.precision) == (384, 64, "fp32")
    texts = ["chest pain radiating to the left arm", "normal sinus rhythm", "no acute process"]
    docs = enc.encode_document(texts)
    np.testing.assert_allclose(docs, enc.encode(texts, prompt="document"), atol=1e-6)
    np.testing.assert_allclose(enc.encode_query(texts), enc.encode(texts, prompt="query"),
                               atol=1e-6)
    streamed = enc.encode(t for t in texts)  # a generator, read a block at a time
    np.testing.assert_allclose(streamed, docs, atol=1e-6)
    sim = enc.similarity(docs, docs[:1])
    assert sim.shape == (3, 1) and abs(sim[0, 0] - 1) < 1e-5 and sim[1, 0] < 0.9
    # fp32 vectors do not depend on the batch: alone equals in a batch
    np.testing.assert_allclose(enc.encode(texts[1:2]), docs[1:2], atol=1e-5)
    with pytest.raises(TypeError, match=r"texts\[1\] is None, not a string"):
        enc.encode(["fine", None])
    with pytest.raises(TypeError, match="got one str"):
        enc.encode("one text")


def test_every_cli_option_teaches():
    """Every option and argument-taking command has help text (`--help` is the manual)."""
    import click

    from mimicsearch.cli import main

    missing = [f"{name} {opt.opts[0]}" for name, cmd in main.commands.items()
               for opt in cmd.params
               if isinstance(opt, click.Option) and not opt.help and opt.name != "help"]
    assert missing == []
    assert all(cmd.help for cmd in main.commands.values())


def test_a_reader_beside_a_writer_sees_whole_states_and_hashes_once(night_one, tmp_path,
                                                                    monkeypatch):
    """Searches in a loop while another process removes notes one commit at a time: every
    search succeeds on the old or the new state; files are hashed once per process."""
    import shutil
    import time

    from mimicsearch.index import manifest as manifest_mod

    ix = tmp_path / "ix"
    shutil.copytree(night_one[0], ix)
    s = Searcher(ix)
    victims = s.ids()[:6]
    vec = s.index.reconstruct(np.arange(6))
    writer = subprocess.Popen(
        [sys.executable, "-c", ("import sys\nfrom mimicsearch import remove_from_index\n"
         "for i in sys.argv[2:]:\n    remove_from_index([int(i)], index_dir=sys.argv[1])"),
         str(ix), *map(str, victims)], env=ENV)
    searches, t0 = 0, time.monotonic()
    while writer.poll() is None and time.monotonic() - t0 < 60:
        res = s.search_vectors(vec, k=3)
        assert len(res) == 6 and all(len(h) == 3 for h in res)
        searches += 1
    assert writer.wait() == 0 and searches > 0
    assert not set(victims) & {h.id for hits in s.search_vectors(vec, k=10) for h in hits}
    hashed = []
    real = manifest_mod.sha256_file
    monkeypatch.setattr(manifest_mod, "sha256_file", lambda p: hashed.append(p) or real(p))
    Searcher(ix)  # the same files again: verified from the cache
    assert hashed == []
    remove_from_index([s.ids()[0]], index_dir=ix)  # one new shard file, store unchanged
    s.reload()
    m = s.index.manifest  # what the removal wrote (hashed as written), nothing else
    assert {p.name for p in hashed} == {sh.index.file.split("/")[-1] for sh in m.shards} | {
        m.deleted.file.split("/")[-1], m.patients.file}


def test_add_and_sync_take_streams_that_can_be_read_once(night_one, notes, tmp_path):
    import shutil

    ix = tmp_path / "ix"
    shutil.copytree(night_one[0], ix)
    new = pa.Table.from_pandas(notes.iloc[60:70], preserve_index=False)

    def stream(table):
        return pa.RecordBatchReader.from_batches(table.schema, table.to_batches(4))

    s = add_notes(stream(new), index_dir=ix, progress=False)
    assert (s.read, s.encoded, s.added, s.live_notes) == (10, 10, 10, 70)
    snapshot = pa.Table.from_pandas(notes.iloc[:70], preserve_index=False)
    s = sync_notes(stream(snapshot), index_dir=ix, progress=False)
    assert (s.read, s.unchanged, s.encoded) == (70, 70, 0)
