"""The lexical part's design: our segments (raw counts, BM25 at query time over live notes)
vs bm25s's precomputed whole-corpus scores vs tantivy, on the same notes, same analysis
(lowercase, English stopwords, Snowball English stemmer), each in its own process.

Per engine: build seconds (tokenize + index + write), peak RSS of the build, bytes on disk,
the RSS of a process that loads it (memory-mapped) and answers queries, and median /
p95 query latency for top-100 over every note (the candidate depth a hybrid query takes),
plus, for segments and bm25s, a query with a filter mask over all notes (how the index
applies filters and tombstones). Quote ratios measured in one run, with the CPU flags beside them.

    python bench/bench_lexical.py --notes 1000000 --queries 200 --engines segments,bm25s
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _notes(n: int, cache: Path) -> Path:
    """`n` synthetic notes (the standard generator) as one Arrow file of texts."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    out = cache / f"notes-{n}.arrow"
    if out.is_file():
        return out
    from mimicsearch.synth import generate

    patients = max(1, int(n / 54.0) + 1)  # the generator writes 55-58 notes a patient
    generate(patients, cache / "synth", seed=0, progress=True)
    table = pcsv.read_csv(cache / "synth" / "NOTEEVENTS.csv", parse_options=pcsv.ParseOptions(
        newlines_in_values=True)).select(["TEXT"]).slice(0, n)
    if table.num_rows < n:
        raise SystemExit(f"the generator gave {table.num_rows} notes; raise the patient count")
    with pa.ipc.new_file(str(out), table.schema) as w:
        w.write_table(table)
    return out


def _texts(path: str) -> list[str]:
    import pyarrow as pa

    return pa.ipc.open_file(pa.memory_map(path)).read_all().column(0).to_pylist()


def _queries(texts: list[str], n: int) -> list[str]:
    """Queries of 3-8 words taken from random notes (what a user might type)."""
    rng = np.random.default_rng(0)
    out = []
    for i in rng.choice(len(texts), n, replace=False):
        words = [w for w in texts[i].split() if w.isalpha() and len(w) > 3]
        k = int(rng.integers(3, 9))
        start = int(rng.integers(0, max(1, len(words) - k)))
        out.append(" ".join(words[start:start + k]) or "pain")
    return out


def build_segments(texts_path: str, out: str) -> dict:
    """The shipped lexical part: segments written as notes stream past (writer.py)."""
    from mimicsearch.index.lexical import SegmentWriter
    from mimicsearch.index.lexical.analysis import ANALYZER
    from mimicsearch.index.manifest import LexicalPart

    texts = _texts(texts_path)
    t0 = time.perf_counter()
    writer = SegmentWriter(out, 0)
    for s in range(0, len(texts), 2048):
        writer.add(texts[s:s + 2048], np.arange(s, min(s + 2048, len(texts))))
    part = LexicalPart(tuple(writer.finish(len(texts))), dict(ANALYZER))
    Path(out, "part.json").write_text(json.dumps(part.to_dict()))
    return {"build_s": time.perf_counter() - t0, "segments": len(part.segments)}


def query_segments(texts_path: str, out: str, queries: list[str]) -> dict:
    from mimicsearch.index.lexical import LexicalIndex, analyze
    from mimicsearch.index.manifest import LexicalPart

    part = LexicalPart.from_dict(json.loads(Path(out, "part.json").read_text()))
    n = part.segments[-1].end_row
    index = LexicalIndex.open(out, part, np.ones(n, bool), verify=False)
    return _latencies(index, n, analyze(queries))


def _latencies(index, n: int, terms: list) -> dict:
    mask = np.random.default_rng(1).random(n) < 0.3
    lat, lat_mask = [], []
    for t in terms:
        t0 = time.perf_counter()
        index.search(t, 100)
        lat.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        index.search(t, 100, mask)
        lat_mask.append(time.perf_counter() - t0)
    return {"ms_p50": 1e3 * np.median(lat), "ms_p95": 1e3 * np.percentile(lat, 95),
            "ms_p50_filtered": 1e3 * np.median(lat_mask)}


def build_bm25s(texts_path: str, out: str) -> dict:
    """The previous design: bm25s's precomputed scores over the whole corpus, rebuilt on
    every change (its IDF and average length are baked in)."""
    import bm25s

    from mimicsearch.index.lexical.analysis import ANALYZER, tokenizer

    texts = _texts(texts_path)
    t0 = time.perf_counter()
    tok = tokenizer()
    ids = []
    for s in range(0, len(texts), 2048):
        ids += tok.tokenize(texts[s:s + 2048], update_vocab=True, return_as="ids",
                            show_progress=False)
    bm25 = bm25s.BM25(k1=ANALYZER["k1"], b=ANALYZER["b"], method=ANALYZER["method"])
    bm25.index((ids, tok.get_vocab_dict()), show_progress=False)
    bm25.save(out, show_progress=False)
    return {"build_s": time.perf_counter() - t0}


class _Bm25sScores:
    """bm25s's precomputed scores behind the reader's `search`."""

    def __init__(self, bm25):
        self.bm25 = bm25

    def search(self, terms, k, allowed=None):
        from mimicsearch.index.lexical import top_k

        ids = self.bm25.get_tokens_ids(terms)
        s = self.bm25.get_scores_from_ids(ids) if ids else np.zeros(1)
        if allowed is not None:
            s = np.where(allowed, s, 0)
        return top_k(s, k)


def query_bm25s(texts_path: str, out: str, queries: list[str]) -> dict:
    import bm25s

    from mimicsearch.index.lexical import analyze

    bm25 = bm25s.BM25.load(out, mmap=True)
    return _latencies(_Bm25sScores(bm25), bm25.scores["num_docs"], analyze(queries))


def _tantivy_index(path: str, create: bool):
    import tantivy

    sb = tantivy.SchemaBuilder()
    sb.add_text_field("text", stored=False, tokenizer_name="en_bm25")
    sb.add_integer_field("row", stored=True, indexed=False, fast=True)
    index = tantivy.Index(sb.build(), path=path, reuse=not create)
    analyzer = (tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
                .filter(tantivy.Filter.lowercase()).filter(tantivy.Filter.stopword("english"))
                .filter(tantivy.Filter.stemmer("english")).build())
    index.register_tokenizer("en_bm25", analyzer)
    return index


def build_tantivy(texts_path: str, out: str) -> dict:
    import tantivy

    texts = _texts(texts_path)
    t0 = time.perf_counter()
    index = _tantivy_index(out, create=True)
    writer = index.writer(heap_size=512 * 2**20, num_threads=2)
    for i, t in enumerate(texts):
        writer.add_document(tantivy.Document(text=t, row=i))
    writer.commit()
    writer.wait_merging_threads()
    return {"build_s": time.perf_counter() - t0}


def query_tantivy(texts_path: str, out: str, queries: list[str]) -> dict:
    index = _tantivy_index(out, create=False)
    index.reload()
    searcher = index.searcher()
    lat = []
    for q in queries:
        t0 = time.perf_counter()
        parsed = index.parse_query_lenient(q, ["text"])[0]
        searcher.search(parsed, 100)
        lat.append(time.perf_counter() - t0)
    return {"ms_p50": 1e3 * np.median(lat), "ms_p95": 1e3 * np.percentile(lat, 95),
            "ms_p50_filtered": None}


def _peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM; ru_maxrss would carry the parent's across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(role: str, engine: str, texts_path: str, out: str, queries_json: str) -> None:
    fn = {"build": {"segments": build_segments, "bm25s": build_bm25s,
                    "tantivy": build_tantivy},
          "query": {"segments": query_segments, "bm25s": query_bm25s,
                    "tantivy": query_tantivy}}[role][engine]
    args = (texts_path, out) if role == "build" else (texts_path, out,
                                                      json.loads(queries_json))
    result = fn(*args)
    result["rss_mb"] = _peak_rss_mb()
    print(json.dumps(result))


def _run(role, engine, texts_path, out, queries) -> dict:
    cmd = [sys.executable, __file__, "--child", role, engine, texts_path, out,
           json.dumps(queries)]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                     text=True).stdout.splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--notes", type=int, default=500_000)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--cache", default="/tmp/bench-lexical")
    p.add_argument("--engines", default="segments,bm25s,tantivy")
    p.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        _child(*a.child)
        return
    cache = Path(a.cache)
    cache.mkdir(parents=True, exist_ok=True)
    texts_path = str(_notes(a.notes, cache))
    texts = _texts(texts_path)
    queries = _queries(texts, a.queries)
    chars = sum(map(len, texts))
    del texts
    flags = sorted({f for f in Path("/proc/cpuinfo").read_text().split()
                    if f in ("avx2", "avx512f", "avx512_vnni", "amx_int8")})
    print(f"{a.notes:,} notes, {chars / 2**20:.0f} MiB of text; {a.queries} queries; "
          f"{os.cpu_count()} cpus {' '.join(flags)}")
    print(f"{'engine':8} {'build s':>8} {'notes/s':>8} {'build RSS MB':>12} {'disk MB':>8} "
          f"{'query RSS MB':>12} {'p50 ms':>7} {'p95 ms':>7} {'p50 filtered':>12}")
    for engine in a.engines.split(","):
        with tempfile.TemporaryDirectory(dir=cache) as out:
            b = _run("build", engine, texts_path, out, [])
            disk = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
            q = _run("query", engine, texts_path, out, queries)
        filt = "-" if q["ms_p50_filtered"] is None else f"{q['ms_p50_filtered']:.2f}"
        print(f"{engine:8} {b['build_s']:8.1f} {a.notes / b['build_s']:8.0f} "
              f"{b['rss_mb']:12.0f} {disk / 2**20:8.0f} {q['rss_mb']:12.0f} "
              f"{q['ms_p50']:7.2f} {q['ms_p95']:7.2f} {filt:>12}")


if __name__ == "__main__":
    main()
