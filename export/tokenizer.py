"""The runtime tokenizer: a `tokenizers` file that gives the ids sentence-transformers gives.

The runtime loads `tokenizer.json` with `tokenizers.Tokenizer.from_file` and prepends prompts
as strings. The file is saved with truncation to max_seq_length and padding to the longest
text of a batch on the model's side, so a plain `encode_batch` reproduces `model.preprocess`;
`check_tokenizer` proves it on sample texts before anything is shipped.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from mimicsearch.fileio import atomic_open


def build_tokenizer(model) -> Tokenizer:
    """A copy of the model's fast tokenizer with the model's truncation and padding."""
    hf_tok = model.tokenizer
    backend = getattr(hf_tok, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(f"{type(hf_tok).__name__} is a slow tokenizer with no tokenizer.json "
                         "form; export needs a model with a fast (Rust) tokenizer")
    tok = Tokenizer.from_str(backend.to_str())
    tok.no_padding()
    tok.enable_truncation(max_length=int(model.max_seq_length))
    tok.enable_padding(direction=hf_tok.padding_side, pad_id=int(hf_tok.pad_token_id),
                       pad_token=str(hf_tok.pad_token))
    return tok


def save_tokenizer(tok: Tokenizer, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(tok.to_str(pretty=False))
    return path


def check_tokenizer(model, tok: Tokenizer, texts: Sequence[str],
                    prompts: Sequence[str | None] = (None,)) -> None:
    """Raise unless `tok` gives the same ids and mask as `model.preprocess` for every prompt."""
    for prompt in prompts:
        ref = model.preprocess(list(texts), prompt=prompt)
        enc = tok.encode_batch([(prompt or "") + t for t in texts])
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        want_ids = ref["input_ids"].numpy()
        want_mask = ref["attention_mask"].numpy()
        if ids.shape != want_ids.shape or not (ids == want_ids).all() \
                or not (mask == want_mask).all():
            rows = [i for i in range(min(len(ids), len(want_ids)))
                    if ids.shape != want_ids.shape or not (ids[i] == want_ids[i]).all()]
            raise ValueError(
                f"tokenizer.json does not reproduce sentence-transformers' tokenization "
                f"(prompt {prompt!r}): shapes {ids.shape} vs {want_ids.shape}, "
                f"{len(rows)} of {len(texts)} sample texts differ (first at index "
                f"{rows[0] if rows else '?'}); this tokenizer needs Python-side handling "
                "that the runtime does not do")
