"""Encoder: real ONNX sessions from the export stage against sentence-transformers on torch."""
import dataclasses
import random
import shutil

import numpy as np
import pytest
from fixtures.models import TINY_GEMMA_WORDS

from mimicsearch.encoder import Encoder, LongMode
from mimicsearch.model_manifest import ModelManifest

WORDS = [w for w in TINY_GEMMA_WORDS if w.isalpha()]


def notes(n: int, seed: int = 0, lo: int = 1, hi: int = 60) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(lo, hi))) for _ in range(n)]


@pytest.fixture(scope="module")
def minilm(minilm_onnx):
    return Encoder(minilm_onnx, precision="fp32", threads=2)


@pytest.fixture(scope="module")
def gemma(tiny_gemma_onnx):
    return Encoder(tiny_gemma_onnx, precision="fp32", threads=2)


def test_minilm_matches_sentence_transformers(minilm, minilm_dir):
    from sentence_transformers import SentenceTransformer

    texts = notes(24, seed=1) + notes(2, seed=2, lo=300, hi=320)  # the last two are cut
    st = SentenceTransformer(str(minilm_dir), device="cpu")
    want = st.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    enc = minilm.encode_detailed(texts, prompt=None)
    assert enc.vectors.dtype == np.float32 and enc.vectors.shape == (26, 384)
    cos = np.sum(enc.vectors * want, axis=1)
    assert cos.min() >= 0.9999, cos.min()
    np.testing.assert_allclose(np.linalg.norm(enc.vectors, axis=1), 1.0, atol=1e-5)
    assert enc.truncated.tolist() == [False] * 24 + [True, True]


def test_max_length_cuts_like_sentence_transformers(minilm_onnx, minilm_dir):
    from sentence_transformers import SentenceTransformer

    texts = notes(6, seed=5, lo=60, hi=90)  # all longer than 32 tokens
    st = SentenceTransformer(str(minilm_dir), device="cpu")
    st.max_seq_length = 32
    want = st.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    enc = Encoder(minilm_onnx, precision="fp32", threads=1, max_length=32)
    got = enc.encode_detailed(texts, prompt=None)
    assert np.sum(got.vectors * want, axis=1).min() >= 0.9999
    assert got.truncated.all()
    full = Encoder(minilm_onnx, precision="fp32", threads=1).encode(texts, prompt=None)
    assert np.sum(full * want, axis=1).min() < 0.999  # the cut is real
    with pytest.raises(ValueError, match="max_length=4096"):
        Encoder(minilm_onnx, max_length=4096)


@pytest.mark.parametrize("prompt", ["document", "query"])
def test_tiny_gemma_matches_sentence_transformers_with_prompts(gemma, tiny_gemma_dir, prompt):
    from sentence_transformers import SentenceTransformer

    texts = notes(16, seed=3, hi=30)
    st = SentenceTransformer(str(tiny_gemma_dir), device="cpu")
    want = st.encode(texts, prompt_name=prompt, normalize_embeddings=True)
    got = gemma.encode(texts, prompt=prompt)
    assert np.sum(got * want, axis=1).min() >= 0.9999
    other = gemma.encode(texts, prompt="query" if prompt == "document" else "document")
    assert np.sum(other * want, axis=1).min() < 0.9999  # the prompt really is applied


def test_order_restored_and_batched_equals_one_at_a_time(tiny_gemma_onnx):
    # A budget of two full-length texts forces many batches of mixed sizes.
    enc = Encoder(tiny_gemma_onnx, precision="fp32", threads=1, token_budget=96, block_size=7)
    texts = notes(40, seed=4, hi=50)
    batched = enc.encode(texts)
    single = np.concatenate([enc.encode([t]) for t in texts])
    np.testing.assert_allclose(batched, single, atol=2e-6)
    reversed_ = enc.encode(texts[::-1])
    np.testing.assert_allclose(reversed_[::-1], batched, atol=2e-6)
    assert len({tuple(np.round(v, 4)) for v in batched}) > 30  # rows are not all alike


def test_matryoshka_truncation_renormalizes(tiny_gemma_onnx, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_gemma_onnx, model)
    m = ModelManifest.load(model)
    dataclasses.replace(m, matryoshka_dims=(32, 16, 8)).save(model)  # as export would write
    enc = Encoder(model, precision="fp32", threads=1)
    texts = notes(6, seed=5)
    full = enc.encode(texts)
    half = enc.encode(texts, dim=16)
    assert half.shape == (6, 16)
    want = full[:, :16] / np.linalg.norm(full[:, :16], axis=1, keepdims=True)
    np.testing.assert_allclose(half, want, atol=1e-6)
    with pytest.raises(ValueError, match=r"dim=12 .*valid: \[32, 16, 8\]"):
        enc.encode(texts, dim=12)


def test_dim_without_matryoshka_is_refused(gemma):
    assert gemma.dims == [32]
    with pytest.raises(ValueError, match=r"valid: \[32\]"):
        gemma.encode(["chest pain"], dim=16)


def test_chunk_mode_averages_overlapping_windows(gemma):
    long_note = notes(1, seed=6, lo=200, hi=200)[0]  # ~4 windows of 48 tokens
    short = notes(3, seed=7, hi=20)
    texts = [short[0], long_note, short[1], short[2]]
    cut = gemma.encode_detailed(texts)
    assert cut.truncated.tolist() == [False, True, False, False]

    win = gemma.encode_detailed(texts, long="windows")
    n_win = int((win.parents == 1).sum())
    body = 48 - 2 - len(gemma._plain.encode("title: none | text: ",
                                              add_special_tokens=False).ids)
    step = body - gemma.overlap
    assert n_win == 1 + -(-(200 - body) // step) and n_win >= 3
    assert win.parents.tolist() == [0] + [1] * n_win + [2, 3]
    assert win.windows[1:1 + n_win].tolist() == list(range(n_win))

    chunk = gemma.encode_detailed(texts, long=LongMode.CHUNK)
    assert chunk.vectors.shape == (4, 32)
    mean = win.vectors[win.parents == 1].mean(axis=0)
    np.testing.assert_allclose(chunk.vectors[1], mean / np.linalg.norm(mean), atol=1e-6)
    # Notes that fit are encoded exactly as in truncate mode; the long one differs.
    np.testing.assert_allclose(chunk.vectors[[0, 2, 3]], cut.vectors[[0, 2, 3]], atol=1e-6)
    assert float(chunk.vectors[1] @ cut.vectors[1]) < 0.9999
    # Each window is the note's stretch with the document prompt, as a short note would be.
    first = gemma.encode([" ".join(long_note.split()[:body])])
    np.testing.assert_allclose(win.vectors[1], first[0], atol=1e-5)


def test_corrupted_model_file_is_refused(tiny_gemma_onnx, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_gemma_onnx, model)
    variant = ModelManifest.load(model).variant("fp32")
    data = bytearray((model / variant.file).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (model / variant.file).write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupted"):
        Encoder(model, precision="fp32")


def test_bad_prompt_and_str_input_are_refused(gemma):
    with pytest.raises(ValueError, match="valid"):
        gemma.encode(["a"], prompt="summary")
    with pytest.raises(TypeError, match="list"):
        gemma.encode("chest pain")
    assert gemma.encode([]).shape == (0, 32)


@pytest.mark.parametrize("seed", range(5))
def test_length_batches_cover_every_row_once_under_the_budget(seed):
    from mimicsearch.encoder import length_batches

    lengths = np.random.default_rng(seed).integers(1, 300, size=200)
    batches = list(length_batches(lengths, token_budget=1024, max_batch=16))
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(200))
    assert (np.diff(lengths[rows]) <= 0).all()  # longest first, so neighbours are alike
    for b in batches:
        assert len(b) <= 16 and (len(b) == 1 or len(b) * lengths[b].max() <= 1024)
        # padded only within its power-of-two bucket: kernels pick their loop by length
        assert len({int(np.ceil(np.log2(x))) for x in lengths[b]}) == 1
