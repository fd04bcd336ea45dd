"""Query API over a real index: hits with metadata, filters, note-id queries, model check."""
from __future__ import annotations

import datetime

import numpy as np
import pyarrow as pa
import pytest
from fixtures.vectors import unit

from mimicsearch.index import ArraySource, BuildOptions, build_index, remove_from_index
from mimicsearch.search import Filters, Searcher, check_model

pytestmark = pytest.mark.usefixtures("faiss_one_thread")

N, DIM = 600, 16


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(1)
    x = unit(rng.standard_normal((N, DIM)))
    meta = pa.table({
        "id": np.arange(N, dtype=np.int64) * 3 + 1,
        "SUBJECT_ID": [str(i // 10) for i in range(N)],  # 10 notes per patient
        "HADM_ID": [str(1000 + i // 5) for i in range(N)],
        "CATEGORY": [("ECG", "Radiology", "Nursing")[i % 3] for i in range(N)],
        "CHARTDATE": ["2150-03-01"] * N,
        "TEXT": [f"note number {i}" for i in range(N)],
    })
    return x, meta


@pytest.fixture
def index_dir(tmp_path, corpus):
    x, meta = corpus
    build_index(ArraySource(x, meta), tmp_path / "ix", model_fingerprint="fp-a",
                model_dir="/nowhere/model", options=BuildOptions(index_key="HNSW32,Flat"),
                progress=False)
    return tmp_path / "ix"


def test_hits_carry_note_ids_and_metadata(index_dir, corpus):
    x, _ = corpus
    s = Searcher(index_dir)
    (hits,) = s.search_vectors(x[42], k=5)
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    top = hits[0]
    assert (top.id, top.row, top.subject, top.admission, top.category) == (
        127, 42, 4, 1008, "ECG")
    assert top.snippet == "note number 42" and abs(top.score - 1.0) < 1e-5
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    d = top.to_dict()
    assert d["id"] == 127 and str(d["time"]) == "2150-03-01"
    assert d["metadata"] == {"SUBJECT_ID": 4, "HADM_ID": 1008, "CATEGORY": "ECG",
                             "CHARTDATE": datetime.date(2150, 3, 1)}


def test_filters(index_dir, corpus):
    x, _ = corpus
    s = Searcher(index_dir)
    (hits,) = s.search_vectors(x[0], k=5, filters=Filters(subjects=("7",)))
    assert len(hits) == 5 and {h.subject for h in hits} == {7}
    exp = np.argsort(-(x[70:80] @ x[0]))[:5] + 70
    assert [h.row for h in hits] == exp.tolist()
    (hits,) = s.search_vectors(x[0], k=10, filters=Filters(categories=("radiology",)))
    assert len(hits) == 10 and {h.category for h in hits} == {"Radiology"}
    (hits,) = s.search_vectors(x[0], k=10, filters=Filters(exclude_subjects=("0",)))
    assert len(hits) == 10 and 0 not in {h.subject for h in hits}


def test_note_id_queries(index_dir, corpus):
    x, _ = corpus
    s = Searcher(index_dir)
    (hits,) = s.search_notes([31], k=10, mode="dense")  # row 10, patient "1"
    assert 31 not in [h.id for h in hits] and len(hits) == 10
    exp = [int(r) for r in np.argsort(-(x @ x[10])) if r != 10][:10]
    assert [h.row for h in hits] == exp
    (hits,) = s.search_notes(["31"], k=10, exclude_own_subject=True, mode="dense")
    assert len(hits) == 10 and 1 not in {h.subject for h in hits}
    with pytest.raises(ValueError, match="not in the index"):
        s.search_notes([2], k=3)  # ids are 1, 4, 7, ...


def test_removed_notes_never_returned(index_dir, corpus):
    x, _ = corpus
    remove_from_index([127, 130], index_dir=index_dir)  # rows 42, 43 (HNSW: tombstones)
    s = Searcher(index_dir)
    (hits,) = s.search_vectors(x[42], k=20)
    assert len(hits) == 20 and not {42, 43} & {h.row for h in hits}
    with pytest.raises(ValueError, match="not in the index"):
        s.search_notes([127])


def test_model_mismatch_refused(index_dir):
    s = Searcher(index_dir)
    check_model(s.index.manifest, "fp-a", "/m")
    with pytest.raises(ValueError, match=r"fingerprint fp-b.*not the model.*fp-a.*--model"):
        check_model(s.index.manifest, "fp-b", "/other/model")
    with pytest.raises(FileNotFoundError, match="/nowhere/model not found"):
        s.search_texts(["chest pain"])


# --- embeddings directories and the CLI (no encoder needed) -----------------------------

def write_embeddings(out, notes_csv, fingerprint="fp-emb", dim=DIM, skip_ids=()):
    """An embeddings directory as `mimicsearch encode` writes it, with random vectors for
    the notes `Reader` accepts (minus `skip_ids`, as if the encoder had rejected them)."""
    import pyarrow.parquet as pq

    from mimicsearch.embeddings import (
        EmbeddingsManifest,
        EmbeddingsShard,
        embedding_column,
        shard_schema,
        snippets_table,
        text_hash_column,
    )
    from mimicsearch.fileio import sha256_file
    from mimicsearch.readers import Reader

    reader = Reader(notes_csv)
    ids, lines, texts, meta = [], [], [], {k: [] for k in reader.columns.keep}
    for b in reader:
        for j, i in enumerate(b.ids):
            if i in skip_ids:
                continue
            ids.append(i)
            lines.append(int(b.lines[j]))
            texts.append(b.texts[j])
            for k, values in meta.items():
                values.append(b.metadata[k][j])
    vecs = unit(np.random.default_rng(3).standard_normal((len(ids), dim)))
    schema = shard_schema(dim, "int64", list(meta), False)
    table = pa.table({"id": ids, "line": lines, **meta,
                      "text_hash": text_hash_column(texts), "embedding": embedding_column(vecs)},
                     schema=schema)
    out.mkdir(parents=True)
    pq.write_table(table, out / "shard-00000.parquet")
    pq.write_table(snippets_table(texts), out / "snippets-00000.parquet")
    st = notes_csv.stat()
    settings = {"input": str(notes_csv), "input_bytes": st.st_size,
                "input_mtime_ns": st.st_mtime_ns, "text_col": "TEXT", "id_col": "ROW_ID"}
    EmbeddingsManifest(fingerprint, dim, len(ids), (EmbeddingsShard(
        "shard-00000.parquet", len(ids), sha256_file(out / "shard-00000.parquet"),
        snippets="snippets-00000.parquet",
        snippets_sha256=sha256_file(out / "snippets-00000.parquet")),),
        tuple(c for c in table.column_names if c != "embedding"), complete=True,
        settings=settings).save(out)
    return vecs, ids


@pytest.fixture(scope="module")
def notes_csv(synth_dir, tmp_path_factory):
    """The first 300 synthetic notes, plus one with empty text (rejected by the reader)."""
    lines = (synth_dir / "NOTEEVENTS.csv").read_text(encoding="utf-8").splitlines(True)
    import csv
    import io

    rows = list(csv.reader(io.StringIO("".join(lines))))
    header, body = rows[0], rows[1:301]
    body.insert(5, ["99999", "1", "2", "2150-01-01", "", "", "ECG", "", "", "", ""])
    path = tmp_path_factory.mktemp("notes") / "notes.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *body])
    return path


def test_snippets_are_cut_while_encoding(tmp_path, notes_csv, minilm_onnx):
    """encode writes each row's snippet beside its shard; building the index reads them
    there, so the notes file is not read again (here it is gone by then)."""
    import shutil

    import pandas as pd

    from mimicsearch.corpus import encode_corpus
    from mimicsearch.index import EmbeddingsSource, open_index
    from mimicsearch.options import EncodeOptions

    notes = tmp_path / "notes.csv"
    shutil.copy(notes_csv, notes)
    s = encode_corpus(notes, model_dir=minilm_onnx, out_dir=tmp_path / "emb", options=EncodeOptions(max_length=32, snippets=True), shard_size=120, batch_size=100, progress=False)
    assert s.rejected == 1 and len(list((tmp_path / "emb").glob("snippets-*.parquet"))) == 2
    notes.unlink()
    build_index(EmbeddingsSource(tmp_path / "emb"), tmp_path / "ix", model_fingerprint="x",
                progress=False)
    store = open_index(tmp_path / "ix").store
    df = pd.read_csv(notes_csv, dtype=str).set_index("ROW_ID")
    assert len(store) == 300 and store.records([0])[0]["id"] == 1
    for rec in store.records(np.arange(0, 300, 37)):
        note = df.loc[str(rec["id"])]
        assert rec["snippet"] == " ".join(note.TEXT.split())[:200].rstrip()
        assert (rec["SUBJECT_ID"], rec["CATEGORY"]) == (int(note.SUBJECT_ID), note.CATEGORY)


def test_cli_from_embeddings(tmp_path, notes_csv):
    import json

    from click.testing import CliRunner

    from mimicsearch.cli import main

    write_embeddings(tmp_path / "emb", notes_csv)
    run = CliRunner().invoke
    ix = str(tmp_path / "ix")
    r = run(main, ["build-index", str(tmp_path / "emb"), "--out", ix, "--index-key",
                   "IVF8,Flat", "--shard-size", "100", "--merge-on-disk", "--no-progress",
                   "--json"])
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    assert m["rows"] == 300 and m["model_fingerprint"] == "fp-emb" and m["quality"]
    r = run(main, ["info", ix])
    assert r.exit_code == 0 and "IVF8,Flat" in r.output and "recall@10" in r.output
    assert "merged on disk" in r.output
    r = run(main, ["query", ix, "--note-id", "10", "-k", "4", "--json"])
    assert r.exit_code == 0, r.output
    (res,) = json.loads(r.stdout)
    assert res["query"] == "10" and len(res["hits"]) == 4
    assert 10 not in [h["id"] for h in res["hits"]]
    assert all(h["snippet"] for h in res["hits"])  # from the notes file `encode` recorded
    subject = Searcher(ix).index.store.records([9])[0]["SUBJECT_ID"]
    r = run(main, ["query", ix, "--note-id", "10", "-k", "30", "--exclude-subject", "--json"])
    hits = json.loads(r.stdout)[0]["hits"]
    assert len(hits) == 30 and subject not in {h["subject"] for h in hits}
    r = run(main, ["query", ix, "--note-id", "10", "--category", "radiology"])
    assert r.exit_code == 0 and "Radiology" in r.output and "Nursing" not in r.output
    r = run(main, ["remove", ix, "--ids", "1, 2", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["live_rows"] == 298
    r = run(main, ["info", ix, "--json"])
    assert json.loads(r.stdout)["tombstones"] == 2  # merged on-disk shard: tombstones
    r = run(main, ["query", ix, "--note-id", "1"])
    assert r.exit_code == 1 and "not in the index" in r.output
    r = run(main, ["query", ix, "chest pain"])
    assert r.exit_code == 1 and "records no model" in r.output and "Traceback" not in r.output
    r = run(main, ["query", ix, "text", "--note-id", "3"])
    assert r.exit_code == 2 and "exactly one of" in r.output
    r = run(main, ["build-index", str(tmp_path / "emb"), "--out", ix])
    assert r.exit_code == 1 and "already holds an index" in r.output


# --- text queries through the real exported MiniLM --------------------------------------

@pytest.fixture(scope="module")
def text_index(tmp_path_factory, minilm_onnx, notes_csv):
    import pandas as pd

    from mimicsearch.encoder import Encoder

    df = pd.read_csv(notes_csv, dtype=str).dropna(subset=["TEXT"]).head(120)
    enc = Encoder(minilm_onnx)
    vecs = enc.encode(df.TEXT.tolist(), prompt="document")
    meta = pa.table({"id": df.ROW_ID.astype(int).to_numpy(), "SUBJECT_ID": df.SUBJECT_ID,
                     "CATEGORY": df.CATEGORY, "TEXT": df.TEXT})
    out = tmp_path_factory.mktemp("text_index") / "ix"
    build_index(ArraySource(vecs, meta), out, model_fingerprint=enc.fingerprint,
                model_dir=str(minilm_onnx), progress=False)
    return out, df, enc


def test_text_queries_find_the_note(text_index):
    out, df, enc = text_index
    s = Searcher(out, encoder=enc)
    texts = df.TEXT.tolist()[10:15]
    batched = s.search_texts(texts, k=3, batch_size=2, mode="dense")
    for i, hits in enumerate(batched):
        assert hits[0].id == int(df.ROW_ID.iloc[10 + i]) and hits[0].score > 0.98
        assert [h.query for h in hits] == [i] * 3
        # int8 activations scale per batch: near-ties below the top may swap
        (alone,) = s.search_texts([texts[i]], k=3, mode="dense")
        assert alone[0].id == hits[0].id
        np.testing.assert_allclose([h.score for h in alone], [h.score for h in hits], atol=0.02)
    # Meaning, not words: 9 of 120 notes are ECG reports, and an ECG-like query finds them.
    (hits,) = Searcher(out).search_texts(["sinus rhythm. normal ECG"], k=5, mode="dense")
    assert [h.category for h in hits] == ["ECG"] * 5


def test_text_query_with_another_model_refused(text_index, tmp_path):
    import json
    import shutil

    out, _, enc = text_index
    shutil.copytree(out, tmp_path / "ix")
    path = tmp_path / "ix" / "manifest.json"
    d = json.loads(path.read_text())
    d["model_fingerprint"] = "0123456789abcdef-384"
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="not the model this index was built with"):
        Searcher(tmp_path / "ix").search_texts(["chest pain"])
    with pytest.raises(ValueError, match="not the model this index was built with"):
        Searcher(tmp_path / "ix", encoder=enc)


def test_cli_end_to_end_from_notes(tmp_path, minilm_onnx, notes_csv):
    """build-index on notes with the real model, text/file/note-id queries, add, remove."""
    import csv
    import json

    from click.testing import CliRunner

    from mimicsearch.cli import main

    rows = list(csv.reader(notes_csv.open(encoding="utf-8", newline="")))
    base, extra = tmp_path / "base.csv", tmp_path / "extra.csv"
    for path, body in ((base, rows[1:101]), (extra, rows[101:116])):
        with open(path, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([rows[0], *body])
    run = CliRunner().invoke
    ix = str(tmp_path / "ix")
    r = run(main, ["build-index", str(base), "--model", str(minilm_onnx), "--out", ix,
                   "--no-progress"])
    assert r.exit_code == 0, r.output
    rejects = tmp_path / "ix" / "embeddings" / "rejects.csv"
    assert (f"read 100 rows: 99 encoded, 1 rejected, 76 truncated (rejects: {rejects})"
            in r.output)  # one with empty text
    assert "build-index " + ix + ": 99 added; 99 live notes, 1 shard(s)" in r.output
    assert "warning: 76 of 99 notes were longer" in r.output and "--long chunk" in r.output
    assert rejects.is_file()
    r = run(main, ["query", ix, "sinus rhythm. normal ECG", "-k", "3", "--json"])
    assert r.exit_code == 0, r.output
    (res,) = json.loads(r.stdout)
    assert [h["category"] for h in res["hits"]] == ["ECG"] * 3
    assert all(isinstance(h["id"], int) and h["snippet"] for h in res["hits"])
    qfile = tmp_path / "q.txt"
    qfile.write_text("chest x-ray\n\nnursing progress note\n", encoding="utf-8")
    r = run(main, ["query", ix, "--file", str(qfile), "-k", "2"])
    assert r.exit_code == 0 and r.output.count("== ") == 2 and "snippet" in r.output
    r = run(main, ["add", ix, str(extra), "--no-progress", "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert {k: got[k] for k in ("read", "encoded", "rejected", "added", "live_notes", "rows",
                                "shards")} == {"read": 15, "encoded": 15, "rejected": 0,
                                               "added": 15, "live_notes": 114, "rows": 114,
                                               "shards": 1}
    assert got["rejects_file"] == str(tmp_path / "ix" / "rejects-add.csv")
    new_id = int(rows[101][0])
    r = run(main, ["query", ix, rows[101][-1], "-k", "1", "--json"])
    assert json.loads(r.stdout)[0]["hits"][0]["id"] == new_id
    r = run(main, ["remove", ix, "--ids", str(new_id)])
    assert r.exit_code == 0 and "113 live rows" in r.output
    r = run(main, ["query", ix, rows[101][-1], "-k", "1", "--json"])
    assert json.loads(r.stdout)[0]["hits"][0]["id"] != new_id
    manifest = tmp_path / "ix" / "manifest.json"
    d = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**d, "model_fingerprint": "0000000000000000-384"}))
    r = run(main, ["query", ix, "chest pain"])
    assert r.exit_code == 1 and "not the model this index was built with" in r.output


def test_add_embeddings_and_model_checks(tmp_path, notes_csv, synth_dir, minilm_onnx):
    import csv

    from mimicsearch.index import open_index
    from mimicsearch.pipeline import add_notes, build_index_from

    write_embeddings(tmp_path / "emb", notes_csv)
    with pytest.raises(ValueError, match="was encoded by model fp-emb, not by"):
        build_index_from(tmp_path / "emb", out_dir=tmp_path / "bad", model_dir=minilm_onnx, progress=False)
    build_index_from(tmp_path / "emb", out_dir=tmp_path / "ix", progress=False)
    rows = list(csv.reader((synth_dir / "NOTEEVENTS.csv").open(encoding="utf-8", newline="")))
    extra = tmp_path / "extra.csv"
    with open(extra, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([rows[0], *rows[301:321]])
    write_embeddings(tmp_path / "emb2", extra)
    write_embeddings(tmp_path / "emb3", extra, fingerprint="fp-other")
    with pytest.raises(ValueError, match="fp-other.*not the model this index was built with"):
        add_notes(tmp_path / "emb3", index_dir=tmp_path / "ix")
    m = add_notes(tmp_path / "emb2", index_dir=tmp_path / "ix")
    assert m.rows == 320 and not list((tmp_path / "ix").glob(".adding-*"))
    new = open_index(tmp_path / "ix").store.records([300])[0]
    assert new["id"] == int(rows[301][0]) and new["snippet"]
    with pytest.raises(ValueError, match="pass --model to encode them"):
        add_notes(extra, index_dir=tmp_path / "ix")  # notes, and the index records no model
