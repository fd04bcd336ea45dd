"""The Spark engine, run for real on local[2]: same vectors and same index as the local engine.

One SparkSession serves every test (starting one costs ~20 s).
"""
import csv
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("pyspark")
# pyspark 4.3 warns that pandas >= 3 is not fully supported; the engine uses Arrow only.
pytestmark = pytest.mark.filterwarnings(
    "ignore:PySpark does not yet fully support pandas:FutureWarning")

from mimicsearch import index as ix
from mimicsearch.embeddings import (
    EmbeddingsManifest,
    EmbeddingsShard,
    embedding_column,
    load_embeddings,
    shard_schema,
    text_hash_column,
)
from mimicsearch.encoder import Encoder
from mimicsearch.fileio import sha256_file
from mimicsearch.options import EncodeOptions
from mimicsearch.readers import Reader

NOTES = 40


@pytest.fixture(scope="module")
def spark():
    from mimicsearch.spark import spark_session

    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = spark_session("local[2]", conf={
        "spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": "4"})
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def notes_csv(synth_dir, tmp_path_factory):
    """NOTES synthetic notes (multi-line, quoted) plus rows the reader must reject."""
    path = tmp_path_factory.mktemp("spark_notes") / "notes.csv"
    with open(synth_dir / "NOTEEVENTS.csv", newline="") as f, open(path, "w", newline="") as g:
        reader, writer = csv.reader(f), csv.writer(g)
        header = next(reader)
        rows = [row for _, row in zip(range(NOTES), reader)]
        ti, ii = header.index("TEXT"), header.index("ROW_ID")

        def variant(i, row_id, text):
            row = list(rows[i])
            row[ii], row[ti] = row_id, text
            return row

        writer.writerows([header, *rows,
                          variant(0, "abc", rows[0][ti]),  # bad id
                          variant(1, rows[1][ii], rows[1][ti]),  # duplicate id
                          variant(2, "999001", "   "),  # blank text
                          variant(3, "999002", 'a "quoted", comma\nand a second line')])
    return path


@pytest.fixture(scope="module")
def few_notes_csv(notes_csv, tmp_path_factory):
    """The first 8 notes: CLI wiring needs a corpus, not a large one."""
    path = tmp_path_factory.mktemp("spark_few") / "few.csv"
    with open(notes_csv, newline="") as f, open(path, "w", newline="") as g:
        csv.writer(g).writerows(row for _, row in zip(range(9), csv.reader(f)))
    return path


def _local(model_dir, texts):
    return Encoder(model_dir, threads=1, precision="fp32").encode(texts)


def test_embed_dataframe_equals_local_in_any_partitioning(spark, minilm_onnx, notes_csv):
    from mimicsearch.spark import embed_dataframe

    batch = next(iter(Reader(notes_csv, keep=[], batch_size=NOTES)))
    texts = batch.texts[:NOTES]
    want = _local(minilm_onnx, texts)
    rows = [(i, t) for i, t in enumerate(texts)] + [(len(texts), None)]
    df = spark.createDataFrame(rows, "id long, TEXT string")
    for parts, ship in ((1, False), (3, True)):  # ship: the model goes by addFile
        out = embed_dataframe(df.repartition(parts), minilm_onnx, precision="fp32",
                              truncated_col="truncated", ship_model=ship)
        assert out.columns == ["id", "TEXT", "embedding", "truncated"]
        rows = sorted(out.collect(), key=lambda r: r["id"])
        got = np.array([r["embedding"] for r in rows[:-1]], dtype=np.float32)
        np.testing.assert_allclose(got, want, atol=2e-5)
        assert any(r["truncated"] for r in rows[:-1])
        assert rows[-1]["embedding"] is None and rows[-1]["truncated"] is None  # null text


def test_executors_run_the_variant_the_driver_chose(spark, minilm_onnx):
    """Pinned on the driver: an executor on another CPU runs it or fails, never another."""
    from mimicsearch.model_manifest import ModelManifest
    from mimicsearch.spark import model_spec

    chosen = ModelManifest.load(minilm_onnx).variant()
    spec = model_spec(spark, minilm_onnx, EncodeOptions())
    assert (spec.options.precision, spec.options.runtime) == (chosen.precision.value,
                                                             chosen.runtime.value)
    assert spec.encoder().variant == chosen
    fp32 = model_spec(spark, minilm_onnx, EncodeOptions(precision="fp32"))
    assert fp32.options.precision == "fp32" and fp32.options.runtime == "onnxruntime"


def test_encode_corpus_spark_equals_local_encode(spark, minilm_onnx, notes_csv, tmp_path):
    from mimicsearch.corpus import encode_corpus
    from mimicsearch.spark import encode_corpus_spark

    local = encode_corpus(notes_csv, model_dir=minilm_onnx, out_dir=tmp_path / "local", options=EncodeOptions(precision="fp32"), threads=1, progress=False)
    dist = encode_corpus_spark(notes_csv, model_dir=minilm_onnx, out_dir=tmp_path / "spark", options=EncodeOptions(precision="fp32"), partitions=3, spark=spark)
    for field in ("read", "encoded", "rejected", "truncated", "rows_written", "dimension"):
        assert getattr(dist, field) == getattr(local, field), field
    assert (dist.read, dist.rejected) == (NOTES + 4, 3)
    want_table, want = load_embeddings(tmp_path / "local")
    table, vectors = load_embeddings(tmp_path / "spark")  # verifies every shard's sha256
    assert table.equals(want_table)  # ids, order, source lines
    np.testing.assert_allclose(vectors, want, atol=2e-5)
    m = EmbeddingsManifest.load(tmp_path / "spark")
    assert len(m.shards) == 3 and m.complete
    assert m.model_fingerprint == EmbeddingsManifest.load(tmp_path / "local").model_fingerprint
    rejects = {}
    for engine in ("local", "spark"):
        with open(tmp_path / engine / "rejects.csv", newline="") as f:
            rejects[engine] = [(r["line"], r["id"], r["reason"]) for r in csv.DictReader(f)]
    assert rejects["spark"] == rejects["local"]  # the same rows, by the same file lines
    assert [r[1:] for r in rejects["spark"]] == [("abc", "bad id: not an integer"),
                                               ("2", rejects["spark"][1][2]),
                                               ("999001", "empty text")]
    assert rejects["spark"][1][2].startswith("duplicate id (first at line")


def test_malformed_csv_is_one_line_without_note_text(spark, minilm_onnx, tmp_path):
    from mimicsearch.readers import MalformedInputError
    from mimicsearch.spark import encode_corpus_spark

    bad = tmp_path / "bad.csv"
    bad.write_text('ROW_ID,TEXT\n1,"fine"\n2,secret words,extra column\n')
    with pytest.raises(MalformedInputError, match="bad.csv: line 3: expected 2 columns") as e:
        encode_corpus_spark(bad, model_dir=minilm_onnx, out_dir=tmp_path / "out", spark=spark)
    assert "secret" not in str(e.value)


def _embeddings_dir(path, n=900, dim=32, files=3, seed=0):
    """A clustered, normalised corpus written as an `encode` output directory."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(12, dim))
    x = centers[rng.integers(0, 12, n)] + 0.3 * rng.normal(size=(n, dim))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    path.mkdir()
    schema = shard_schema(dim, "int64", ["SUBJECT_ID"], False)
    shards = []
    for i, rows in enumerate(np.array_split(np.arange(n), files)):
        table = pa.Table.from_arrays(
            [pa.array(1000 + rows), pa.array(rows + 2), pa.array([str(r % 7) for r in rows]),
             text_hash_column([f"note {r}" for r in rows]), embedding_column(x[rows])],
            schema=schema)
        name = f"shard-{i:05d}.parquet"
        pq.write_table(table, path / name)
        shards.append(EmbeddingsShard(name, len(rows), sha256_file(path / name)))
    EmbeddingsManifest("test-fp", dim, n, tuple(shards), ("id", "line", "SUBJECT_ID",
                                                              "text_hash"), complete=True).save(path)
    return x


@pytest.mark.parametrize("key,shard_size,merge", [("IVF16,Flat", 250, True), ("Flat", None, False)])
def test_build_index_spark_equals_local(spark, tmp_path, key, shard_size, merge):
    from mimicsearch.spark import build_index_spark

    x = _embeddings_dir(tmp_path / "emb")
    local = ix.build_index(ix.EmbeddingsSource(tmp_path / "emb"), tmp_path / "local",
                           model_fingerprint="test-fp",
                           options=ix.BuildOptions(index_key=key, shard_size=shard_size,
                                                   seed=3), progress=False)
    dist = build_index_spark(tmp_path / "emb", out_dir=tmp_path / "spark", options=ix.BuildOptions(index_key=key, shard_size=shard_size,
                                                     merge=merge, seed=3), partitions=3, spark=spark)
    assert dist.trained.sha256 == local.trained.sha256  # same sample, same quantizer
    assert (dist.rows, dist.ntotal, dist.index_key) == (local.rows, local.ntotal, key)
    assert len(dist.shards) == (1 if merge else 3)
    assert dist.quality.recall_at_10 == local.quality.recall_at_10
    assert dist.search_params == local.search_params
    a, b = ix.open_index(tmp_path / "local"), ix.open_index(tmp_path / "spark")
    queries = x[::37]
    for params in (local.search_params, a.exhaustive_params()):
        a.set_search_params(params)
        b.set_search_params(params)
        (Da, Ia), (Db, Ib) = a.search(queries, 10), b.search(queries, 10)
        np.testing.assert_allclose(Db, Da, atol=1e-5)
        assert (Ia == Ib).mean() > 0.99  # ties may swap
    assert b.store.records([5])[0]["id"] == 1005
    info = ix.index_info(tmp_path / "spark")
    assert info["quality"]["rows_measured"] == 900


def test_cli_engine_spark(spark, minilm_onnx, few_notes_csv, tmp_path):
    import json

    from click.testing import CliRunner

    from mimicsearch.cli import main

    runner = CliRunner()
    out = tmp_path / "index"
    r = runner.invoke(main, ["build-index", str(few_notes_csv), "--model", str(minilm_onnx),
                             "--out", str(out), "--engine", "spark", "--master", "local[2]",
                             "--no-progress"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["query", str(out), "chest pain", "-k", "3", "--json"])
    assert r.exit_code == 0, r.output
    hits = json.loads(r.output)[0]["hits"]
    assert len(hits) == 3 and all(h["snippet"] for h in hits)
    r = runner.invoke(main, ["info", str(out), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["rows"] == 8 and "spark" in info["build"]["source"]
    r = runner.invoke(main, ["encode", str(few_notes_csv), "--model", str(minilm_onnx), "--out",
                             str(tmp_path / "emb"), "--engine", "spark", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["encoded"] == 8
    assert EmbeddingsManifest.load(tmp_path / "emb").rows == 8


def test_without_pyspark_the_spark_engine_names_the_extra(notes_csv, tmp_path):
    code = (
        "import sys; sys.modules['pyspark'] = None\n"
        "from click.testing import CliRunner\n"
        "from mimicsearch.cli import main\n"
        f"r = CliRunner().invoke(main, ['build-index', {str(notes_csv)!r}, '--out', "
        f"{str(tmp_path / 'x')!r}, '--engine', 'spark'])\n"
        "print(r.exit_code); print(r.output)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    code_, _, message = p.stdout.partition("\n")
    assert code_ == "1"
    assert "[spark] extra" in message and "pip install 'mimicsearch[spark]'" in message
    assert len(message.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_both_engines_decide_every_hostile_row_alike(spark, minilm_onnx, tmp_path):
    """Multi-line quoted notes, blank and whitespace-only texts, a duplicate id, invalid
    UTF-8, a long note, a BOM: the same rows kept, the same rejects by the same lines."""
    import random

    from mimicsearch.corpus import encode_corpus
    from mimicsearch.spark import encode_corpus_spark

    rng = random.Random(3)
    rows = [b"\xef\xbb\xbfROW_ID,SUBJECT_ID,CATEGORY,TEXT"]
    for i in range(1, 61):
        text = " ".join(rng.choices(["chest", "pain", "sinus", "rhythm", "effusion"], k=8))
        kind = i % 10
        if kind == 1:
            text = f'"{text}\nsecond line, with a comma and ""quotes"""'
        elif kind == 2:
            text = "   "
        elif kind == 3:
            text = ""
        elif kind == 4:
            text = text.replace("pain", "p\xe9in").encode("latin-1").decode("latin-1")
            rows.append(f"{i},{i % 7},ECG,".encode() + text.encode("latin-1"))  # not UTF-8
            continue
        elif kind == 5:
            text = " ".join(["effusion"] * 20_000)
        row_id = i - 1 if kind == 6 else i
        rows.append(f"{row_id},{i % 7},Radiology,{text}".encode())
    src = tmp_path / "hostile.csv"
    src.write_bytes(b"\n".join(rows) + b"\n")
    options = EncodeOptions(precision="fp32", max_length=32)
    local = encode_corpus(src, model_dir=minilm_onnx, out_dir=tmp_path / "local",
                          options=options, threads=1, progress=False)
    dist = encode_corpus_spark(src, model_dir=minilm_onnx, out_dir=tmp_path / "spark",
                               options=options, partitions=2, spark=spark)
    assert (dist.read, dist.encoded, dist.rejected) == (local.read, local.encoded,
                                                        local.rejected)
    assert dist.read == 60 and dist.encoded + dist.rejected == 60
    rejects = (tmp_path / "spark" / "rejects.csv").read_text()
    assert rejects == (tmp_path / "local" / "rejects.csv").read_text()
    for reason in ("empty text", "text is not valid UTF-8", "duplicate id (first at line"):
        assert reason in rejects
    want_table, want = load_embeddings(tmp_path / "local")
    table, vectors = load_embeddings(tmp_path / "spark")
    assert table.equals(want_table)
    np.testing.assert_allclose(vectors, want, atol=2e-5)


def test_spark_writes_the_lexical_segments_on_its_executors_as_local_does(spark, tmp_path):
    """Each build piece tokenizes its own notes and writes its segments beside its shard,
    on whichever executor runs it: the segments' contents, row ranges and every lexical
    and dense answer equal the local engine's."""
    from mimicsearch.embeddings import write_embeddings
    from mimicsearch.index.lexical import analyze
    from mimicsearch.spark import build_index_spark

    rng = np.random.default_rng(7)
    words = ["heparin", "sepsis", "stent", "effusion", "troponin", "pain", "the", "patient"]
    n, dim = 600, 16

    def batches():
        for first in range(0, n, 200):
            ids = np.arange(first, first + 200)
            x = rng.standard_normal((200, dim)).astype(np.float32)
            texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 12))))
                     for _ in ids]
            yield (ids, x / np.linalg.norm(x, axis=1, keepdims=True),
                   pa.table({"SUBJECT_ID": [str(i % 17) for i in ids]}), texts)

    write_embeddings(tmp_path / "emb", batches(), model_fingerprint="test-fp",
                     metadata=["SUBJECT_ID"])
    options = ix.BuildOptions(index_key="Flat", shard_size=150, seed=3)
    local = ix.build_index(ix.EmbeddingsSource(tmp_path / "emb"), tmp_path / "local",
                           model_fingerprint="test-fp", options=options, progress=False)
    dist = build_index_spark(tmp_path / "emb", out_dir=tmp_path / "spark", options=options,
                             partitions=3, spark=spark)

    def contents(m):
        return [([s.files[r].sha256 for r in sorted(s.files)], s.first_row, s.end_row,
                 s.documents) for s in m.lexical.segments]

    assert len(local.lexical.segments) == 4 and contents(dist) == contents(local)
    a, b = ix.open_index(tmp_path / "local"), ix.open_index(tmp_path / "spark")
    for terms in analyze(["heparin sepsis", "troponin troponin stent", "pain effusion"]):
        (sa, ra), (sb, rb) = a.lexical.search(terms, 50), b.lexical.search(terms, 50)
        assert ra.tolist() == rb.tolist() and sa.tolist() == sb.tolist() and len(ra)
    q = rng.standard_normal((5, dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    assert a.search(q, 10)[1].tolist() == b.search(q, 10)[1].tolist()
