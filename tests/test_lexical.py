"""The lexical part of an index and the query modes: BM25 over whole texts built beside the
FAISS shards, kept exact through add/remove/sync, filtered like the dense part; dense,
lexical and hybrid answers equal brute force on a small corpus; RRF and weighted fusion on
constructed cases; patient search on constructed patients. Real faiss indexes, real bm25s
indexes, real files."""
from __future__ import annotations

import json

import bm25s
import numpy as np
import pyarrow as pa
import pytest
import Stemmer
from fixtures.server import mimicsearch
from fixtures.vectors import unit

from mimicsearch.filters import Filters
from mimicsearch.fusion import Fusion, fuse
from mimicsearch.index import (
    ArraySource,
    BuildOptions,
    add_to_index,
    build_index,
    open_index,
    remove_from_index,
)
from mimicsearch.search import Searcher

WORDS = ["heparin", "warfarin", "metoprolol", "furosemide", "insulin", "vancomycin", "pneumonia", "effusion", "fracture", "stent", "catheter", "intubated", "sepsis", "fibrillation", "embolism", "creatinine", "lactate", "troponin", "hemoglobin", "platelets"]
FILLER = ["the", "patient", "was", "seen", "and", "examined", "today", "with", "family", "at", "bedside"]
DIM = 16


def corpus(n: int, first_id: int = 0, seed: int = 0):
    """Notes mixing rare clinical words with filler, of varied lengths, 7 patients, 3
    categories; random unit vectors (the dense part is checked against its own brute force)."""
    rng = np.random.default_rng(seed)
    texts = []
    for i in range(n):
        words = list(rng.choice(WORDS, size=int(rng.integers(1, 6)))) + list(
            rng.choice(FILLER, size=int(rng.integers(0, 40))))
        rng.shuffle(words)
        texts.append(" ".join(words).capitalize() + ".")
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    meta = pa.table({"id": ids, "SUBJECT_ID": [str(100 + i % 7) for i in ids],
                     "CATEGORY": [("Nursing", "Radiology", "ECG")[i % 3] for i in ids],
                     "TEXT": texts})
    return unit(rng.standard_normal((n, DIM))), meta, texts


def bm25_brute(texts: list[str], query: str) -> np.ndarray:
    """A fresh bm25s index over `texts` with the documented analysis: the reference."""
    stem = Stemmer.Stemmer("english")
    retriever = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    retriever.index(bm25s.tokenize(texts, stopwords="en", stemmer=stem, show_progress=False),
                    show_progress=False)
    q = bm25s.tokenize([query], stopwords="en", stemmer=stem, return_ids=False,
                       show_progress=False)[0]
    return retriever.get_scores(q) if q else np.zeros(len(texts), np.float32)


def build(tmp_path, n=90, **options):
    x, meta, texts = corpus(n)
    ix = tmp_path / "ix"
    build_index(ArraySource(x, meta), ix, model_fingerprint="f", progress=False,
                options=BuildOptions(index_key="Flat", shard_size=40, **options))
    return ix, x, meta, texts


def test_round_trip_hashed_and_equal_to_a_fresh_bm25(tmp_path):
    ix, _, meta, texts = build(tmp_path)
    m = open_index(ix).manifest
    assert m.lexical is not None and m.lexical.documents == len(texts)
    names = {f.file for f in m.files()}
    assert {f.file for f in m.lexical.refs()} <= names
    assert m.lexical.analyzer["stemmer"] == "english"
    s = Searcher(ix)
    assert s.modes == ("dense", "lexical", "hybrid")
    for query in ("heparin and warfarin", "Intubated for SEPSIS", "embolisms"):
        ref = bm25_brute(texts, query)
        hits = s.search_texts([query], k=10, mode="lexical")[0]
        want = np.argsort(-ref, kind="stable")[:len(hits)]
        assert [h.id for h in hits] == meta.column("id").to_numpy()[want].tolist()
        assert [h.score for h in hits] == pytest.approx(ref[want].tolist(), rel=1e-5)
        assert all(h.retrievers == {"lexical": {"rank": h.rank, "score": h.score}}
                   for h in hits)
        assert len(hits) == min(10, int((ref > 0).sum()))  # non-matching notes are no hits
    # the stemmer matters: a plural finds the singular
    assert s.search_texts(["catheters"], k=3, mode="lexical")[0]


def test_building_the_lexical_part_shows_progress(tmp_path, capfd):
    x, meta, _ = corpus(50)
    for progress in (True, False):
        build_index(ArraySource(x, meta), tmp_path / f"ix{progress}", model_fingerprint="f",
                    progress=progress, options=BuildOptions(index_key="Flat"))
        err = capfd.readouterr().err
        assert ("indexing (vectors + BM25)" in err and "50/50" in err) is progress


def test_a_tampered_lexical_file_is_refused(tmp_path):
    ix, *_ = build(tmp_path, n=30)
    ref = open_index(ix).manifest.lexical.segments[0].files["term_counts"]
    path = ix / ref.file
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupted|modified"):
        open_index(ix)


def brute_dense(x, live, allowed, q, k):
    ok = np.flatnonzero(live & allowed)
    scores = x[ok] @ q
    order = np.argsort(-scores, kind="stable")[:k]
    return ok[order], scores[order]


def test_every_mode_equals_brute_force_after_add_remove_and_filters(tmp_path):
    ix, x, _, texts = build(tmp_path, n=90)
    x2, meta2, texts2 = corpus(25, first_id=90, seed=1)
    add_to_index(x2, meta2, index_dir=ix)
    remove_from_index([3, 4, 50, 95], index_dir=ix)
    xs = np.vstack([x, x2])
    all_texts = texts + texts2
    ids = np.arange(115)
    live = ~np.isin(ids, [3, 4, 50, 95])
    cats = np.array([("Nursing", "Radiology", "ECG")[i % 3] for i in ids])
    subjects = np.array([str(100 + i % 7) for i in ids])
    s = Searcher(ix)
    assert s.index.lexical.n_live == live.sum() and s.index.manifest.lexical.documents == 115
    q_text = "warfarin fibrillation stent"
    q_vec = unit(np.random.default_rng(9).standard_normal((1, DIM)))[0].astype(np.float32)
    k = 8
    for filters, allowed in [
        (None, np.ones(115, bool)),
        (Filters(categories=["Radiology", "ECG"]), cats != "Nursing"),
        (Filters(exclude_subjects=["101", "102"]), ~np.isin(subjects, ["101", "102"])),
    ]:
        rows, scores = brute_dense(xs, live, allowed, q_vec, k)
        dense = s.search_vectors(q_vec, k, filters)[0]
        assert [h.id for h in dense] == rows.tolist()
        assert [h.score for h in dense] == pytest.approx(scores.tolist(), abs=1e-5)

        lex_ref = bm25_brute([t for t, ok in zip(all_texts, live) if ok], q_text)
        full = np.zeros(115)
        full[live] = lex_ref
        full[~allowed] = 0
        order = [i for i in np.argsort(-full, kind="stable") if full[i] > 0][:k]
        lexical = s.search_texts([q_text], k, filters, mode="lexical")[0]
        assert [h.id for h in lexical] == order
        assert [h.score for h in lexical] == pytest.approx(full[order].tolist(), rel=1e-5)

        # hybrid: RRF over each retriever's top `depth`, computed here by hand
        depth = 20
        d_rows, _ = brute_dense(xs, live, allowed, q_vec, depth)
        l_rows = [i for i in np.argsort(-full, kind="stable") if full[i] > 0][:depth]
        rrf = {}
        for ranked in (d_rows.tolist(), l_rows):
            for r, i in enumerate(ranked, 1):
                rrf[i] = rrf.get(i, 0) + 1 / (60 + r)
        want = sorted(rrf, key=lambda i: -rrf[i])[:k]
        got = s._retrieve("hybrid", Fusion(depth=depth), k, s.allowed(filters),
                          q_vec[None], [analyze_one(q_text)], 0)[0]
        assert [h.id for h in got] == want
        assert [h.score for h in got] == pytest.approx([rrf[i] for i in want], abs=1e-6)
        for h in got:
            assert set(h.retrievers) == {"dense", "lexical"}
            assert h.retrievers["lexical"]["rank"] == (l_rows.index(h.id) + 1
                                                       if h.id in l_rows else None)


def analyze_one(text):
    from mimicsearch.index.lexical import analyze

    return analyze([text])[0]


def test_rrf_on_a_constructed_case():
    dense = [("a", 0.9), ("b", 0.8), ("c", 0.7)]
    lexical = [("c", 12.0), ("d", 9.0), ("a", 1.0)]
    out = fuse({"dense": dense, "lexical": lexical}, Fusion(k=60))
    score = {"a": 1 / 61 + 1 / 63, "b": 1 / 62, "c": 1 / 63 + 1 / 61, "d": 1 / 62}
    # a and c tie exactly; the tie goes to the dense list's order; b before d likewise
    assert [f.key for f in out] == ["a", "c", "b", "d"]
    assert [f.score for f in out] == pytest.approx([score[k] for k in "acbd"])
    assert out[2].retrievers == {"dense": (2, 0.8), "lexical": (None, None)}
    lexical_heavy = fuse({"dense": dense, "lexical": lexical},
                         Fusion(k=60, dense_weight=1, lexical_weight=2))
    assert [f.key for f in lexical_heavy][:2] == ["c", "a"]
    assert lexical_heavy[0].score == pytest.approx(1 / 63 + 2 / 61)


def test_weighted_fusion_scores_missing_candidates_exactly():
    dense = [("a", 0.9), ("b", 0.5)]
    lexical = [("c", 10.0), ("a", 5.0)]
    exact = {"dense": lambda keys: [0.1 for _ in keys],  # c's dense score
             "lexical": lambda keys: [0.0 for _ in keys]}  # b matches no word
    out = fuse({"dense": dense, "lexical": lexical}, Fusion("weighted"), exact)
    # dense scaled over {a .9, b .5, c .1}; lexical over {c 10, a 5, b 0}
    want = {"a": 1.0 + 0.5, "b": 0.5 + 0.0, "c": 0.0 + 1.0}
    assert {f.key: round(f.score, 9) for f in out} == pytest.approx(want)
    assert [f.key for f in out] == ["a", "c", "b"]
    assert out[1].retrievers["dense"] == (None, 0.1)
    with pytest.raises(ValueError, match="method"):
        Fusion("max")
    with pytest.raises(ValueError, match="both fusion weights"):
        Fusion(dense_weight=0, lexical_weight=0)


def test_no_lexical_part_refuses_those_modes_by_name(tmp_path):
    ix, *_ = build(tmp_path, n=30, lexical=False)
    s = Searcher(ix)
    assert s.modes == ("dense",) and open_index(ix).manifest.lexical is None
    with pytest.raises(ValueError, match=r"modes here: \['dense'\]"):
        s.search_texts(["heparin"], mode="lexical")
    with pytest.raises(ValueError, match="valid: \\['dense', 'lexical', 'hybrid'\\]"):
        s.search_texts(["heparin"], mode="bm25")


def test_adding_notes_without_text_to_a_lexical_index_is_refused(tmp_path):
    ix, *_ = build(tmp_path, n=30)
    before = (ix / "manifest.json").read_bytes()
    x2, meta2, _ = corpus(3, first_id=30)
    with pytest.raises(ValueError, match="BM25 over their whole text"):
        add_to_index(x2, meta2.drop_columns(["TEXT"]), index_dir=ix)
    assert (ix / "manifest.json").read_bytes() == before
    assert Searcher(ix).search_texts(["heparin warfarin"], mode="lexical")[0]


def test_patient_search_on_constructed_patients(tmp_path):
    """Three patients: 1 and 2 share a disease (their vectors and words), 3 has another;
    a query patient 1 must rank 2 first, never 1 itself, in every mode."""
    rng = np.random.default_rng(0)
    cardiac, ortho = unit(rng.standard_normal((2, DIM)))
    rows, vecs = [], []
    story = {1: (cardiac, "atrial fibrillation on warfarin, rate controlled with metoprolol"),
             2: (cardiac, "new atrial fibrillation; warfarin started, metoprolol titrated"),
             3: (ortho, "hip fracture after a fall, orthopedics to fix the femur"),
             4: (ortho, "wrist fracture in a cast, orthopedics follow up")}
    for subject, (center, text) in story.items():
        for j in range(4):
            rows.append({"id": subject * 10 + j, "SUBJECT_ID": str(subject),
                         "TEXT": f"{text}. Day {j}."})
            vecs.append(unit((center + 0.3 * rng.standard_normal(DIM))[None])[0])
    ix = tmp_path / "ix"
    build_index(ArraySource(np.array(vecs, np.float32), pa.Table.from_pylist(rows)), ix,
                model_fingerprint="f", options=BuildOptions(index_key="Flat"), progress=False)
    s = Searcher(ix)
    for mode in ("dense", "lexical", "hybrid"):
        ranked = s.similar_patients(subject_id=1, k=3, mode=mode)
        assert ranked[0].subject == 2, mode
        assert 1 not in [p.subject for p in ranked]
        assert ranked[0].notes == 4 and ranked[0].best.subject == 2
        by_note = s.similar_patients(note_id=31, k=1, mode=mode)
        assert by_note[0].subject == 4, mode
    ranked = s.similar_patients("femur fracture", k=2, mode="lexical")
    assert {p.subject for p in ranked} == {3, 4}
    assert [p.rank for p in ranked] == [1, 2] and ranked[0].score >= ranked[1].score
    with pytest.raises(ValueError, match="exactly one"):
        s.similar_patients("x", subject_id=1)
    with pytest.raises(ValueError, match="not in this index"):
        s.similar_patients(subject_id=99)


def test_dense_patient_search_equals_pooled_brute_force(tmp_path):
    """Dense patient search is the cosine of pooled rows: every window of a note counts, a
    filter pools only the notes it lets through (the query patient stays whole), a removed
    note stops counting, and hybrid fuses the dense and lexical patient rankings."""
    x, base, _ = corpus(60)
    rows = []  # note n has 1 + n % 3 window rows, its text on the first
    for n in range(24):
        for w in range(1 + n % 3):
            rows.append({"id": n, "WINDOW": w, "SUBJECT_ID": str(100 + n % 7),
                         "CATEGORY": ("Nursing", "Radiology", "ECG")[n % 3],
                         "TEXT": base.column("TEXT")[n].as_py() if w == 0 else None})
    meta = pa.Table.from_pylist(rows)
    x = x[:len(rows)]
    ix = tmp_path / "ix"
    build_index(ArraySource(x, meta), ix, model_fingerprint="f", progress=False,
                options=BuildOptions(index_key="Flat", shard_size=25))
    subjects = np.array(meta.column("SUBJECT_ID").to_pylist()).astype(int)
    nursing = np.array(meta.column("CATEGORY").to_pylist()) == "Nursing"
    live = np.ones(len(rows), bool)

    def brute(query: int, candidates: np.ndarray) -> list[tuple[int, float]]:
        def mean(rows):
            v = x[rows].sum(axis=0)
            return v / np.linalg.norm(v)
        q = mean(live & (subjects == query))
        scores = {p: float(mean(candidates & (subjects == p)) @ q)
                  for p in set(subjects[candidates]) - {query}}
        return sorted(scores.items(), key=lambda t: -t[1])

    s = Searcher(ix)
    for filters, candidates in ((None, live), (Filters(categories=["Nursing"]), nursing)):
        got = s.similar_patients(subject_id=101, k=6, filters=filters, mode="dense")
        want = brute(101, candidates)
        assert [p.subject for p in got] == [p for p, _ in want]
        assert np.allclose([p.score for p in got], [sc for _, sc in want], atol=1e-5)
        best = got[0].best
        assert best.subject == got[0].subject
        assert filters is None or best.category == "Nursing"
    pooled = s.similar_patients(subject_id=101, k=6, mode="dense")[0]
    assert pooled.notes == len(set(meta.column("id").to_numpy()[subjects == pooled.subject]))
    gone = meta.column("id").to_numpy()[subjects == 102][:2].tolist()
    remove_from_index(gone, index_dir=ix)
    live[np.isin(meta.column("id").to_numpy(), gone)] = False
    got = s.similar_patients(subject_id=101, k=6, mode="dense")
    want = brute(101, live)
    assert [p.subject for p in got] == [p for p, _ in want]
    assert np.allclose([p.score for p in got], [sc for _, sc in want], atol=1e-5)
    fused = s.similar_patients(subject_id=101, k=6, mode="hybrid",
                               fusion=Fusion(lexical_weight=0))
    assert [p.subject for p in fused] == [p for p, _ in want]
    assert all(set(p.retrievers) == {"dense", "lexical"} for p in fused)
    assert [p.retrievers["dense"]["rank"] for p in fused] == list(range(1, 7))


def windowed_corpus(tmp_path):
    """24 notes of 7 patients, note n with 1 + n % 3 window rows (its text on the first)."""
    x, base, _ = corpus(60)
    rows = []
    for n in range(24):
        for w in range(1 + n % 3):
            rows.append({"id": n, "WINDOW": w, "SUBJECT_ID": str(100 + n % 7),
                         "CATEGORY": ("Nursing", "Radiology", "ECG")[n % 3],
                         "TEXT": base.column("TEXT")[n].as_py() if w == 0 else None})
    meta = pa.Table.from_pylist(rows)
    x = x[:len(rows)]
    ix = tmp_path / "ix"
    build_index(ArraySource(x, meta), ix, model_fingerprint="f", progress=False,
                options=BuildOptions(index_key="Flat", shard_size=25))
    return ix, x, meta


def bm25_histories(texts: dict, query_terms: list[str]) -> dict:
    """A fresh bm25s index over each patient's texts joined into one document (patient ->
    its texts), scored for distinct analysed query terms: the reference."""
    stem = Stemmer.Stemmer("english")
    patients = sorted(texts)
    retriever = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    retriever.index(bm25s.tokenize([" ".join(texts[p]) for p in patients], stopwords="en",
                                   stemmer=stem, show_progress=False), show_progress=False)
    return dict(zip(patients, retriever.get_scores(query_terms)))


def test_lexical_patient_search_is_bm25_over_joined_histories(tmp_path):
    """Lexical patient search equals bm25s indexing each patient's notes joined into one
    text: windows counted once, a filter judging only the notes it lets through (the query
    patient's words all of its history), a removed note gone, a text query, and weighted
    hybrid scoring a patient one ranking left out by that ranking's exact score."""
    ix, x, meta = windowed_corpus(tmp_path)
    note = meta.column("id").to_numpy()
    subject = np.array(meta.column("SUBJECT_ID").to_pylist())
    category = np.array(meta.column("CATEGORY").to_pylist())
    text = meta.column("TEXT").to_pylist()
    first = np.array([t is not None for t in text])
    live = np.ones(len(text), bool)
    stem = Stemmer.Stemmer("english")

    def terms(texts):
        return sorted({t for d in bm25s.tokenize(texts, stopwords="en", stemmer=stem,
                                                 return_ids=False, show_progress=False)
                       for t in d})

    def want(query_terms, candidates, own=None):
        keep = first & live & candidates
        scores = bm25_histories({p: [text[i] for i in np.flatnonzero(keep & (subject == p))]
                                 for p in set(subject[keep])}, query_terms)
        return sorted(((p, float(v)) for p, v in scores.items() if p != own and v > 0),
                      key=lambda t: -t[1])

    def check(got, expected):
        assert [str(p.subject) for p in got] == [p for p, _ in expected][:len(got)]
        assert np.allclose([p.score for p in got], [v for _, v in expected][:len(got)],
                           rtol=1e-5)

    s = Searcher(ix)
    history = terms([text[i] for i in np.flatnonzero(first & (subject == "101"))])
    everyone = np.ones(len(text), bool)
    for filters, candidates in ((None, everyone),
                                (Filters(categories=["Nursing"]), category == "Nursing")):
        got = s.similar_patients(subject_id=101, k=6, filters=filters, mode="lexical")
        check(got, want(history, candidates, "101"))
        assert len(got) == 6
        for p in got:
            mine = first & candidates & (subject == str(p.subject))
            assert p.notes == mine.sum() and p.best.subject == p.subject
            assert mine[p.best.row] and p.best.retrievers["lexical"]["rank"] == 1
    got = s.similar_patients("heparin stent sepsis", k=6, mode="lexical")
    check(got, want(terms(["heparin stent sepsis"]), everyone))
    got = s.similar_patients(note_id=3, k=6, mode="lexical")
    check(got, want(terms([text[int(np.flatnonzero(note == 3)[0])]]), everyone, "103"))

    gone = note[first & (subject == "102")][:2].tolist()
    remove_from_index(gone, index_dir=ix)
    live[np.isin(note, gone)] = False
    history = terms([text[i] for i in np.flatnonzero(first & live & (subject == "101"))])
    lexical = want(history, everyone, "101")
    check(s.similar_patients(subject_id=101, k=6, mode="lexical"), lexical)

    def pooled(rows):
        v = x[rows].sum(axis=0)
        return v / np.linalg.norm(v)
    q = pooled(live & (subject == "101"))
    dense = {p: float(pooled(live & (subject == p)) @ q) for p in set(subject) - {"101"}}
    lexical = dict(lexical)
    fused = s.similar_patients(subject_id=101, k=2, mode="hybrid",
                               fusion=Fusion("weighted", lexical_weight=0.5, depth=2))
    top = {p for r in (dense, lexical) for p in sorted(r, key=lambda p: -r[p])[:2]}
    assert len(top) > 2, "the constructed case must have a patient one top 2 leaves out"

    def scaled(scores):
        lo, hi = min(scores[p] for p in top), max(scores[p] for p in top)
        return {p: (scores[p] - lo) / (hi - lo) for p in top}
    d, lx = scaled(dense), scaled({p: lexical.get(p, 0.0) for p in dense})
    expected = sorted(top, key=lambda p: -(d[p] + 0.5 * lx[p]))[:2]
    assert [str(p.subject) for p in fused] == expected
    assert np.allclose([p.score for p in fused], [d[p] + 0.5 * lx[p] for p in expected],
                       atol=1e-5)
    for p in fused:
        assert p.retrievers["dense"]["score"] == pytest.approx(dense[str(p.subject)],
                                                               abs=1e-5)
        assert p.retrievers["lexical"]["score"] == pytest.approx(
            lexical.get(str(p.subject), 0.0), rel=1e-5)


def test_an_index_of_the_older_format_is_read_or_refused_with_the_fix(tmp_path):
    """Format 1 differs only in its lexical part (one bm25s file set): such an index without
    a lexical part opens as before; with one, opening says to rebuild, and how."""
    ix, _, _ = windowed_corpus(tmp_path)
    path = ix / "manifest.json"
    m = json.loads(path.read_text())
    old = {**m, "format_version": 1,
           "lexical": {"files": {"data": {"file": "lexical-x.data.npy", "sha256": "0" * 64,
                                          "size_bytes": 1}},
                       "documents": 3, "analyzer": {}}}
    path.write_text(json.dumps(old))
    with pytest.raises(ValueError, match="older mimicsearch.*rebuild the index with "
                                         "`build-index`"):
        open_index(ix)
    out = mimicsearch("query", str(ix), "heparin")
    assert out.returncode != 0 and "build-index" in out.stderr and "Traceback" not in out.stderr
    path.write_text(json.dumps({**m, "format_version": 1, "lexical": None}))
    s = Searcher(ix)
    assert s.modes == ("dense",) and s.similar_patients(subject_id=101, k=3, mode="dense")


def test_query_and_patients_cli_in_every_mode(serve_index, tmp_path):
    """The real MiniLM index: --mode, --explain, --json provenance, patients, usage errors."""
    out = mimicsearch("query", str(serve_index), "heparin drip", "--mode", "hybrid",
                      "--explain", "-k", "5")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("mode: hybrid ")  # the fusion the index measured best
    head = lines[1].split()
    assert head[:3] == ["#", "id", "subject"] and "dense" in head and "lexical" in head
    assert len(lines) == 7
    out = mimicsearch("query", str(serve_index), "heparin drip", "--explain", "-k", "5")
    chosen = Searcher(serve_index).describe_auto()
    assert out.stdout.splitlines()[0] == (
        f"mode: auto -> {chosen['setting']} (measured R@5 {chosen['recall@5']:.3f} R@10 "
        f"{chosen['recall@10']:.3f} on {chosen['pairs']} next-note pairs)")
    out = mimicsearch("query", str(serve_index), "heparin drip", "--mode", "hybrid",
                      "--fusion", "weighted", "--weights", "1,0.5", "--json", "-k", "4")
    hits = json.loads(out.stdout)[0]["hits"]
    assert len(hits) == 4 and all(set(h["retrievers"]) == {"dense", "lexical"} for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    out = mimicsearch("query", str(serve_index), "heparin", "--mode", "lexical", "--json")
    hits = json.loads(out.stdout)[0]["hits"]
    assert hits and all("heparin" in Searcher(serve_index).notes([h["id"]])[0].text.lower()
                        for h in hits)
    bad = mimicsearch("query", str(serve_index), "heparin", "--mode", "dense",
                      "--weights", "1,2")
    assert bad.returncode == 2 and "apply only to --mode hybrid" in bad.stderr
    bad = mimicsearch("query", str(serve_index), "heparin", "--mode", "hybrid",
                      "--weights", "one,two")
    assert bad.returncode == 2 and "DENSE,LEXICAL" in bad.stderr
    subject = Searcher(serve_index).notes(Searcher(serve_index).ids()[:1])[0].subject
    out = mimicsearch("patients", str(serve_index), "--subject", str(subject), "--mode",
                      "hybrid", "-k", "3", "--json")
    assert out.returncode == 0, out.stderr
    patients = json.loads(out.stdout)["patients"]
    assert len(patients) == 3 and subject not in [p["subject"] for p in patients]
    bad = mimicsearch("patients", str(serve_index), "--subject", "999999999")
    assert bad.returncode == 1 and "not in this index" in bad.stderr
    bad = mimicsearch("patients", str(serve_index), "--subject", "nobody")
    assert bad.returncode == 1 and "int64" in bad.stderr and "Traceback" not in bad.stderr
