"""Encoder: an exported model directory turned into fast CPU embeddings, without torch.

Three layers, as in fastembed: the tokenizer (`tokenizers`, truncation at the manifest's
max_seq_length), the session (one onnxruntime session whose graph already pools and
normalises), and post-processing (Matryoshka truncation, window averaging, re-normalising).

Speed comes from the batching: a block of texts is tokenized at once, sorted by token
length and cut into batches under a token budget, each padded only to its own longest text,
so padding costs little; results are put back in input order. The next block is read and
tokenized in a thread while the session runs the current one (both release the GIL).

The session is onnxruntime's, or OpenVINO's for an `openvino-int8` variant (the `openvino`
extra): same feed, same output, same post-processing.
"""
from __future__ import annotations

import enum
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from tokenizers import Tokenizer

from .cpu import physical_cores
from .model_manifest import ModelManifest, Precision, Runtime, Variant, unmet_message, verify_file
from .session import open_runner

log = logging.getLogger(__name__)
T = TypeVar("T")
KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
MAX_BATCH = 128


class LongMode(str, enum.Enum):
    TRUNCATE = "truncate"  # cut at max_seq_length (and count it)
    CHUNK = "chunk"  # overlapping windows, normalised mean: one vector per note
    WINDOWS = "windows"  # overlapping windows, one vector per window with its parent


@dataclass
class Encoded:
    """Vectors of one block of texts plus what happened to long ones."""

    vectors: np.ndarray  # float32 [rows, dim], L2-normalised; rows == texts unless windows
    truncated: np.ndarray  # bool [texts]: longer than max_seq_length (cut, or windowed)
    parents: np.ndarray  # int64 [rows]: index of each row's text within the block
    windows: np.ndarray  # int32 [rows]: window number within its text (0 if not split)
    tokens: np.ndarray  # int64 [texts]: tokens read per text, prompt and specials included


@dataclass
class _Tokens:
    """A tokenized block as flat arrays: row r is flat[offsets[r]:offsets[r] + lengths[r]]."""

    flat: np.ndarray  # int64 [total tokens]
    offsets: np.ndarray  # int64 [rows]
    lengths: np.ndarray  # int64 [rows]
    parents: np.ndarray  # int64 [rows], non-decreasing
    windows: np.ndarray  # int32 [rows]
    truncated: np.ndarray  # bool [texts]


def default_token_budget(max_seq_length: int) -> int:
    return max(2048, max_seq_length)


def length_batches(lengths: np.ndarray, token_budget: int, max_batch: int = MAX_BATCH
                   ) -> Iterator[np.ndarray]:
    """Row indices of each session call: longest texts first, each batch as many rows as fit
    `token_budget` padded tokens, and no batch mixing lengths across a power of two.

    The power-of-two rule keeps a text's vector independent of its neighbours: kernels pick
    their loop by the padded length (onnxruntime's attention on EmbeddingGemma: a 30-token
    note alone and padded past 64 tokens differ at cosine 0.9991 in int8, where per-token
    quantization amplifies the last-bit change), so a text is only ever padded within its
    own bucket, where the measured vectors are identical."""
    lengths = np.asarray(lengths)
    order = np.argsort(-lengths, kind="stable")
    bucket = np.ceil(np.log2(np.maximum(lengths[order], 1))).astype(np.int64)  # sorted desc
    start = 0
    while start < len(order):
        longest = int(lengths[order[start]])
        size = max(1, min(max_batch, token_budget // max(longest, 1)))
        end = int(np.searchsorted(-bucket, -bucket[start], side="right"))  # bucket's end
        size = min(size, end - start)
        yield order[start:start + size]
        start += size


def _normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)  # [rows, 1]
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


class Encoder:
    """Encode texts with an exported model directory (see mimicsearch/model_manifest.py).

    threads: intra-op threads (default: physical cores). precision and runtime: the variant to
    load (default: see ModelManifest.variant; the fastest batch-independent int8 variant
    this host can run, then fp32; a variant passed over for this CPU is logged as a
    warning). token_budget: padded tokens per session call
    (default max(2048, max_seq_length)).
    overlap: tokens shared by consecutive windows in chunk/windows mode (default 1/4).
    max_length: tokens per text or window, at most the manifest's max_seq_length (its
    default). EmbeddingGemma reads 2,048; a job that cuts notes at 512 runs several times
    faster, and the cut is counted as truncation like any other.

    Reproducibility: every default variant gives a text the same vector in any batch (int8
    scales are per token); an export made with `--activations per-tensor` does not.
    """

    def __init__(self, model_dir: str | Path, threads: int | None = None,
                 precision: str | Precision | None = None, token_budget: int | None = None,
                 max_batch: int = MAX_BATCH, block_size: int = 1024, overlap: int | None = None,
                 max_length: int | None = None, runtime: str | Runtime | None = None):
        m = ModelManifest.load(model_dir)
        variant = m.variant(precision, runtime)
        if precision is None and runtime is None:
            for skipped in m.skipped_here():
                log.warning("%s; running the %s variant", unmet_message(skipped), variant.name)
        if variant.weights_file:
            verify_file(model_dir, variant.weights_file, variant.weights_sha256)
        self._load(Path(model_dir), m, variant,
                   verify_file(model_dir, variant.file, variant.sha256),
                   verify_file(model_dir, m.tokenizer_file, m.tokenizer_sha256),
                   threads, token_budget, max_batch, block_size, overlap, max_length,
                   variant.runtime, variant.runtime_config)

    @classmethod
    def from_files(cls, onnx_path: str | Path, tokenizer_path: str | Path,
                   manifest: ModelManifest, threads: int | None = None,
                   token_budget: int | None = None, max_batch: int = MAX_BATCH,
                   block_size: int = 1024, overlap: int | None = None,
                   max_length: int | None = None,
                   runtime: str | Runtime = Runtime.ONNXRUNTIME,
                   runtime_config: dict[str, str] | None = None) -> Encoder:
        """An Encoder over files no manifest lists yet: the export's parity gate measures
        each variant with it before the manifest is written, so the gate runs exactly what
        users run. `manifest` supplies everything but the variants; `variant` is None."""
        self = cls.__new__(cls)
        self._load(Path(onnx_path).parent, manifest, None, Path(onnx_path),
                   Path(tokenizer_path), threads, token_budget, max_batch, block_size, overlap,
                   max_length, Runtime(runtime), runtime_config or {})
        return self

    def _load(self, model_dir: Path, m: ModelManifest, variant: Variant | None,
              onnx_path: Path, tok_path: Path, threads: int | None, token_budget: int | None,
              max_batch: int, block_size: int, overlap: int | None,
              max_length: int | None, runtime: Runtime, runtime_config: dict[str, str]) -> None:
        self.model_dir, self.manifest, self.variant = model_dir, m, variant
        self.file = onnx_path.name
        if max_length is not None and not 8 <= max_length <= m.max_seq_length:
            raise ValueError(f"max_length={max_length}: must be between 8 and the model's "
                             f"max_seq_length {m.max_seq_length}")
        self.max_length = max_length or m.max_seq_length
        # Small batches stay in cache: MiniLM at 256 tokens, one thread, ms/text for budgets
        # 1024/4096/16384: fp32 52/59/70, int8 39/43/44.
        token_budget = token_budget or default_token_budget(self.max_length)
        if token_budget < self.max_length:
            raise ValueError(f"token_budget={token_budget} is below max_length="
                             f"{self.max_length}: one full-length text must fit a batch")
        self.token_budget, self.max_batch, self.block_size = token_budget, max_batch, block_size
        self.threads = threads or physical_cores()

        self._tok = Tokenizer.from_file(str(tok_path))
        self._tok.no_padding()
        self._tok.enable_truncation(self.max_length)
        self._plain = Tokenizer.from_file(str(tok_path))  # whole notes, for windows
        self._plain.no_padding()
        self._plain.no_truncation()
        probe = self._tok.encode("a")
        mask = probe.special_tokens_mask
        n_pre = next((i for i, s in enumerate(mask) if not s), len(mask))
        n_post = next((i for i, s in enumerate(reversed(mask)) if not s), 0)
        self._prefix = np.asarray(probe.ids[:n_pre], dtype=np.int64)
        self._suffix = np.asarray(probe.ids[len(probe.ids) - n_post:], dtype=np.int64)
        self.overlap = self.max_length // 4 if overlap is None else overlap
        self.runtime = runtime
        self.runner = open_runner(onnx_path, self.threads, runtime.value, runtime_config)
        self._check_graph()

    def _check_graph(self) -> None:
        m = self.manifest
        names = self.runner.input_names
        unknown = [n for n in names if n not in KNOWN_INPUTS]
        if unknown or "input_ids" not in names:
            raise ValueError(f"{self.model_dir}/{self.file} takes inputs {names}; "
                             f"this runtime feeds {list(KNOWN_INPUTS)} (input_ids required)")
        self._inputs = names
        outputs = self.runner.output_names
        if m.output_name not in outputs:
            raise ValueError(f"{self.model_dir}/{self.file} has outputs {outputs}, "
                             f"not the manifest's {m.output_name!r}; re-export the model")
        got = self._run_tokens(self._tokenize(["dimension check"], "", LongMode.TRUNCATE))
        if got.shape[1] != m.dimension:
            raise ValueError(f"{self.model_dir}/{self.file} returns {got.shape[1]}-d "
                             f"vectors, the manifest says {m.dimension}; re-export the model")

    @property
    def fingerprint(self) -> str:
        return self.manifest.fingerprint

    @property
    def dimension(self) -> int:
        """The full output dimension (Matryoshka models also give `dims`)."""
        return self.manifest.dimension

    @property
    def max_seq_length(self) -> int:
        """Tokens per text (or window) this encoder reads; longer texts are cut or split."""
        return self.max_length

    @property
    def precision(self) -> str:
        """The variant loaded: fp32, int8 or int4."""
        return str(getattr(self.variant.precision, "value", self.variant.precision))

    @property
    def dims(self) -> list[int]:
        """Valid output dimensions, largest first."""
        return sorted({self.manifest.dimension, *self.manifest.matryoshka_dims}, reverse=True)

    def check_dim(self, dim: int | None) -> int:
        if dim is None:
            return self.manifest.dimension
        if dim not in self.dims:
            raise ValueError(f"dim={dim} is not a Matryoshka dimension of "
                             f"{self.manifest.source_model}; valid: {self.dims}")
        return dim

    def prompt_text(self, prompt: str | None) -> str:
        """The string prepended for a prompt name; "" where the model has none."""
        if prompt is None:
            return ""
        prompts = self.manifest.prompts
        if prompt in prompts:
            return prompts[prompt]
        if prompt in ("query", "document"):
            return ""
        raise ValueError(f"unknown prompt {prompt!r}; valid: "
                         f"{sorted({'query', 'document', *prompts})} or None")

    def token_counts(self, texts: Sequence[str], prompt: str | None = "document") -> list[int]:
        """Tokens each text is read as (prompt and special tokens included, cut at
        max_seq_length), without encoding: what `Encoded.tokens` reports after."""
        return [len(e.ids) for e in self._tok.encode_batch(
            [self.prompt_text(prompt) + t for t in texts])]

    # -- tokenizer layer -----------------------------------------------------------------

    def _tokenize(self, texts: Sequence[str], prompt: str, long: LongMode) -> _Tokens:
        full = [prompt + t for t in texts] if prompt else list(texts)
        encs = self._tok.encode_batch(full)
        ids = [e.ids for e in encs]
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        truncated = np.fromiter((bool(e.overflowing) for e in encs), dtype=bool, count=len(ids))
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64,
                           count=int(lengths.sum()))
        offsets = np.zeros(len(ids), dtype=np.int64)
        np.cumsum(lengths[:-1], out=offsets[1:])
        parents = np.arange(len(ids), dtype=np.int64)
        windows = np.zeros(len(ids), dtype=np.int32)
        tokens = _Tokens(flat, offsets, lengths, parents, windows, truncated)
        if long is LongMode.TRUNCATE or not truncated.any():
            return tokens
        return self._split_windows(tokens, texts, prompt)

    def _split_windows(self, tokens: _Tokens, texts: Sequence[str], prompt: str) -> _Tokens:
        """Replace each truncated row by overlapping windows over the whole note.

        Each window is prefix + prompt + a stretch of the note + suffix, so every window is
        embedded as the model expects a document to look.
        """
        long_idx = np.flatnonzero(tokens.truncated)
        prompt_ids = np.asarray(self._plain.encode(prompt, add_special_tokens=False).ids
                                if prompt else [], dtype=np.int64)
        head = np.concatenate([self._prefix, prompt_ids])
        width = self.max_length - len(head) - len(self._suffix)
        step = width - self.overlap
        if width < 1 or step < 1:
            raise ValueError(f"overlap={self.overlap} leaves no room for a window of "
                             f"max_length={self.max_length}; lower it")
        bodies = self._plain.encode_batch([texts[i] for i in long_idx], add_special_tokens=False)
        pieces, lengths, parents, windows = [], [], [], []
        for i, enc in zip(long_idx, bodies):  # only notes longer than max_seq_length
            body = np.asarray(enc.ids, dtype=np.int64)
            n = 1 + max(0, -(-(len(body) - width) // step))
            for w in range(n):
                piece = np.concatenate([head, body[w * step:w * step + width], self._suffix])
                pieces.append(piece)
                lengths.append(len(piece))
                parents.append(i)
                windows.append(w)
        keep = ~tokens.truncated
        flat = np.concatenate([tokens.flat, *pieces])
        extra_offsets = len(tokens.flat) + np.concatenate([[0], np.cumsum(lengths)[:-1]])
        offsets = np.concatenate([tokens.offsets[keep], extra_offsets]).astype(np.int64)
        all_lengths = np.concatenate([tokens.lengths[keep], lengths]).astype(np.int64)
        all_parents = np.concatenate([tokens.parents[keep], parents]).astype(np.int64)
        all_windows = np.concatenate([tokens.windows[keep], windows]).astype(np.int32)
        order = np.lexsort((all_windows, all_parents))
        return _Tokens(flat, offsets[order], all_lengths[order], all_parents[order],
                       all_windows[order], tokens.truncated)

    # -- session layer -------------------------------------------------------------------

    def _run_tokens(self, tokens: _Tokens) -> np.ndarray:
        """Raw graph output for every row, in row order: float32 [rows, dimension]."""
        lengths = tokens.lengths
        out = np.empty((len(lengths), self.manifest.dimension), dtype=np.float32)
        pad = self.manifest.pad_token_id
        left = self.manifest.padding_side == "left"
        for idx in length_batches(lengths, self.token_budget, self.max_batch):
            longest = int(lengths[idx[0]])
            cols = np.arange(longest)
            shift = longest - lengths[idx][:, None] if left else 0  # [batch, 1] pad before
            valid = (cols >= shift) & (cols < shift + lengths[idx][:, None])  # [batch, longest]
            pos = np.where(valid, tokens.offsets[idx][:, None] + cols - shift, 0)  # same
            feed = {"input_ids": np.where(valid, tokens.flat[pos], pad)}  # [batch, longest]
            if "attention_mask" in self._inputs:
                feed["attention_mask"] = valid.astype(np.int64)
            if "token_type_ids" in self._inputs:
                feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
            out[idx] = self.runner.run(self.manifest.output_name, feed)  # [batch, dim]
        return out

    # -- post-processing -----------------------------------------------------------------

    def _finish(self, tokens: _Tokens, raw: np.ndarray, dim: int, long: LongMode) -> Encoded:
        vectors = _normalize(raw[:, :dim])  # [rows, dim]
        n = len(tokens.truncated)
        read = np.bincount(tokens.parents, weights=tokens.lengths, minlength=n).astype(np.int64)
        if long is LongMode.CHUNK and len(tokens.parents) != n:
            starts = np.flatnonzero(np.r_[True, tokens.parents[1:] != tokens.parents[:-1]])
            vectors = _normalize(np.add.reduceat(vectors, starts, axis=0))  # [texts, dim]
            return Encoded(vectors, tokens.truncated, np.arange(n, dtype=np.int64),
                           np.zeros(n, dtype=np.int32), read)
        return Encoded(vectors, tokens.truncated, tokens.parents, tokens.windows, read)

    # -- public API ----------------------------------------------------------------------

    def encode_stream(self, items: Iterable[T], texts: Callable[[T], Sequence[str]],
                      prompt: str | None = "document", dim: int | None = None,
                      long: LongMode | str = LongMode.TRUNCATE) -> Iterator[tuple[T, Encoded]]:
        """Encode blocks as they come: (item, Encoded) for each item of `items`.

        Reading and tokenizing the next item happen in a thread while the session runs
        the current one.
        """
        dim, long, prompt_str = self.check_dim(dim), LongMode(long), self.prompt_text(prompt)
        it = iter(items)

        def prepare():
            for item in it:
                return item, self._tokenize(texts(item), prompt_str, long)
            return None

        with ThreadPoolExecutor(1, thread_name_prefix="tokenize") as pool:
            pending = pool.submit(prepare)
            while (ready := pending.result()) is not None:
                pending = pool.submit(prepare)
                item, tokens = ready
                yield item, self._finish(tokens, self._run_tokens(tokens), dim, long)

    def _blocks(self, texts: Iterable[str]) -> Iterator[tuple[int, list[str]]]:
        """(offset, texts) blocks of `block_size`, each text checked: any iterable, a
        generator included, is read one block at a time."""
        if isinstance(texts, (str, bytes)):
            raise TypeError("encode() takes a list of texts, got one str; wrap it in a list")
        block: list[str] = []
        start = 0
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] is {t!r}, not a string")
            block.append(t)
            if len(block) == self.block_size:
                yield start, block
                start, block = i + 1, []
        if block:
            yield start, block

    def encode_detailed(self, texts: Iterable[str], prompt: str | None = "document",
                        dim: int | None = None,
                        long: LongMode | str = LongMode.TRUNCATE) -> Encoded:
        """`Encoded` for all texts; parents index into `texts`."""
        dim = self.check_dim(dim)
        blocks = self._blocks(texts)
        parts = [(start, enc) for (start, _), enc in
                 self.encode_stream(blocks, lambda b: b[1], prompt, dim, long)]
        if not parts:
            empty = np.zeros(0, dtype=np.int64)
            return Encoded(np.zeros((0, dim), np.float32), np.zeros(0, bool), empty,
                           empty.astype(np.int32), empty)
        return Encoded(np.concatenate([e.vectors for _, e in parts]),
                       np.concatenate([e.truncated for _, e in parts]),
                       np.concatenate([e.parents + s for s, e in parts]),
                       np.concatenate([e.windows for _, e in parts]),
                       np.concatenate([e.tokens for _, e in parts]))

    def encode(self, texts: Iterable[str], prompt: str | None = "document",
               dim: int | None = None, long: LongMode | str = LongMode.TRUNCATE) -> np.ndarray:
        """float32 [len(texts), dim] L2-normalised (one row per window if long="windows").
        `texts`: a list, or any iterable (read a block at a time). Raises TypeError for a
        bare str or a non-string item, ValueError for an invalid dim or prompt."""
        return self.encode_detailed(texts, prompt, dim, long).vectors

    def encode_query(self, texts: Iterable[str], dim: int | None = None) -> np.ndarray:
        """Queries, with the model's query prompt (sentence-transformers' encode_query)."""
        return self.encode(texts, "query", dim)

    def encode_document(self, texts: Iterable[str], dim: int | None = None,
                        long: LongMode | str = LongMode.TRUNCATE) -> np.ndarray:
        """Notes, with the model's document prompt (sentence-transformers' encode_document)."""
        return self.encode(texts, "document", dim, long)

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Cosine similarity float32 [len(a), len(b)] of two sets of encoder vectors."""
        a, b = np.atleast_2d(a), np.atleast_2d(b)
        return (_normalize(a) @ _normalize(b).T).astype(np.float32)
