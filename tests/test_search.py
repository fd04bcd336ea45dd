"""Query API over a real index: hits with metadata, filters, note-id queries, model check."""
from __future__ import annotations

import faiss
import numpy as np
import pyarrow as pa
import pytest

from mimicsearch.index import ArraySource, build_index, remove_from_index
from mimicsearch.search import Filters, Searcher, check_model

N, DIM = 600, 16


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


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
                model_dir="/nowhere/model", index_key="HNSW32,Flat", progress=False)
    return tmp_path / "ix"


def test_hits_carry_note_ids_and_metadata(index_dir, corpus):
    x, _ = corpus
    s = Searcher(index_dir)
    (hits,) = s.search_vectors(x[42], k=5)
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    top = hits[0]
    assert (top.id, top.row, top.subject_id, top.hadm_id, top.category) == (
        127, 42, "4", "1008", "ECG")
    assert top.snippet == "note number 42" and abs(top.score - 1.0) < 1e-5
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    d = top.to_dict()
    assert d["id"] == 127 and d["chartdate"] == "2150-03-01"


def test_filters(index_dir, corpus):
    x, _ = corpus
    s = Searcher(index_dir)
    (hits,) = s.search_vectors(x[0], k=5, filters=Filters(subjects=("7",)))
    assert len(hits) == 5 and {h.subject_id for h in hits} == {"7"}
    exp = np.argsort(-(x[70:80] @ x[0]))[:5] + 70
    assert [h.row for h in hits] == exp.tolist()
    (hits,) = s.search_vectors(x[0], k=10, filters=Filters(categories=("radiology",)))
    assert len(hits) == 10 and {h.category for h in hits} == {"Radiology"}
    (hits,) = s.search_vectors(x[0], k=10, filters=Filters(exclude_subjects=("0",)))
    assert len(hits) == 10 and "0" not in {h.subject_id for h in hits}


def test_note_id_queries(index_dir, corpus):
    x, _ = corpus
    s = Searcher(index_dir)
    (hits,) = s.search_notes([31], k=10)  # row 10, patient "1"
    assert 31 not in [h.id for h in hits] and len(hits) == 10
    exp = [int(r) for r in np.argsort(-(x @ x[10])) if r != 10][:10]
    assert [h.row for h in hits] == exp
    (hits,) = s.search_notes(["31"], k=10, exclude_own_subject=True)
    assert len(hits) == 10 and "1" not in {h.subject_id for h in hits}
    with pytest.raises(ValueError, match="not in the index"):
        s.search_notes([2], k=3)  # ids are 1, 4, 7, ...


def test_removed_notes_never_returned(index_dir, corpus):
    x, _ = corpus
    remove_from_index(index_dir, [127, 130])  # rows 42, 43 (HNSW: tombstones)
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
