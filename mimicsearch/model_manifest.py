"""The model directory contract between the export stage and the runtime.

An exported model directory holds ONNX variants, `tokenizer.json` and `manifest.json`.
The runtime trusts only what the manifest says, and checks file hashes before use.
"""
from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .fileio import MANIFEST, check_kind, read_manifest, safe_child, sha256_file, write_json

FORMAT_VERSION = 1
KIND = "mimicsearch-model"


class Precision(str, enum.Enum):
    FP32 = "fp32"
    INT8 = "int8"
    INT4 = "int4"


@dataclass(frozen=True)
class Parity:
    """How far a variant's embeddings are from the PyTorch model's on held-out texts."""

    cosine_min: float
    cosine_mean: float
    top10_overlap: float
    texts: int

    @classmethod
    def from_dict(cls, d: dict) -> Parity:
        return cls(float(d["cosine_min"]), float(d["cosine_mean"]),
                   float(d["top10_overlap"]), int(d["texts"]))


@dataclass(frozen=True)
class Variant:
    precision: Precision
    file: str
    sha256: str
    size_bytes: int
    parity: Parity | None = None
    usable: bool = True
    reason: str = ""
    # How the variant was made (e.g. the int8 recipe and the MatMuls kept in fp32), so an
    # export can be reproduced; informational, the runtime does not read it.
    recipe: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["precision"] = self.precision.value
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Variant:
        try:
            precision = Precision(d["precision"])
        except ValueError:
            raise ValueError(f"unknown precision {d['precision']!r}; valid: "
                             f"{[p.value for p in Precision]}") from None
        return cls(
            precision=precision,
            file=str(d["file"]),
            sha256=str(d["sha256"]),
            size_bytes=int(d["size_bytes"]),
            parity=Parity.from_dict(d["parity"]) if d.get("parity") else None,
            usable=bool(d.get("usable", True)),
            reason=str(d.get("reason", "")),
            recipe=dict(d.get("recipe") or {}),
        )


VECTOR_FIELDS = ("dimension", "max_seq_length", "matryoshka_dims", "prompts", "normalize",
                 "pooling", "pad_token_id", "padding_side", "default_prompt_name",
                 "input_names", "output_name")


@dataclass(frozen=True)
class ModelManifest:
    source_model: str
    source_sha256: str
    dimension: int
    max_seq_length: int
    variants: tuple[Variant, ...]
    tokenizer_sha256: str
    matryoshka_dims: tuple[int, ...] = ()
    prompts: dict[str, str] = field(default_factory=dict)
    normalize: bool = True
    pooling: str = "mean"
    tokenizer_file: str = "tokenizer.json"
    pad_token_id: int = 0
    # Side the tokenizer pads a batch on (tokenizer.json pads there too); position-sensitive
    # models give other vectors if it changes.
    padding_side: str = "right"
    # Prompt sentence-transformers applies when the caller names none ("" = no prompt).
    default_prompt_name: str = ""
    input_names: tuple[str, ...] = ("input_ids", "attention_mask")
    output_name: str = "sentence_embedding"
    kind: str = KIND
    format_version: int = FORMAT_VERSION

    @property
    def fingerprint(self) -> str:
        """Identifies the embedding space: same source weights and dimension, same vectors."""
        return f"{self.source_sha256[:16]}-{self.dimension}"

    @property
    def settings_sha256(self) -> str:
        """Hash of the fields besides the files that decide a text's vector (how it is cut,
        prompted, padded, pooled): export records it, load refuses a manifest whose fields
        were edited since, which would silently change every query vector."""
        fields = {name: getattr(self, name) for name in VECTOR_FIELDS}
        fields["matryoshka_dims"] = list(self.matryoshka_dims)
        fields["input_names"] = list(self.input_names)
        blob = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    def variant(self, precision: str | Precision | None = None) -> Variant:
        """The requested variant, or the most compact usable one."""
        usable = [v for v in self.variants if v.usable]
        if precision is None:
            order = [Precision.INT8, Precision.FP32, Precision.INT4]
            for p in order:
                for v in usable:
                    if v.precision is p:
                        return v
            raise ValueError("manifest lists no usable variant")
        p = Precision(precision)
        for v in self.variants:
            if v.precision is p:
                if not v.usable:
                    raise ValueError(f"variant {p.value} failed its parity gate: {v.reason}")
                return v
        raise ValueError(f"no {p.value} variant; available: {[v.precision.value for v in usable]}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["variants"] = [v.to_dict() for v in self.variants]
        d["matryoshka_dims"] = list(self.matryoshka_dims)
        d["input_names"] = list(self.input_names)
        d["fingerprint"] = self.fingerprint
        d["settings_sha256"] = self.settings_sha256
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelManifest:
        check_kind(d, KIND, "mimicsearch export")
        version = d.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"manifest format_version {version!r} is not supported "
                             f"(this mimicsearch reads {FORMAT_VERSION}); re-export the model")
        try:
            m = cls(
                source_model=str(d["source_model"]),
                source_sha256=str(d["source_sha256"]),
                dimension=int(d["dimension"]),
                max_seq_length=int(d["max_seq_length"]),
                variants=tuple(Variant.from_dict(v) for v in d["variants"]),
                tokenizer_sha256=str(d["tokenizer_sha256"]),
                matryoshka_dims=tuple(int(x) for x in d.get("matryoshka_dims", ())),
                prompts={str(k): str(v) for k, v in d.get("prompts", {}).items()},
                normalize=bool(d.get("normalize", True)),
                pooling=str(d.get("pooling", "mean")),
                tokenizer_file=str(d.get("tokenizer_file", "tokenizer.json")),
                pad_token_id=int(d.get("pad_token_id", 0)),
                padding_side=str(d.get("padding_side", "right")),
                default_prompt_name=str(d.get("default_prompt_name", "")),
                input_names=tuple(d.get("input_names", ("input_ids", "attention_mask"))),
                output_name=str(d.get("output_name", "sentence_embedding")),
            )
        except KeyError as e:
            raise ValueError(f"manifest is missing the field {e.args[0]!r}") from None
        if m.dimension <= 0 or m.max_seq_length <= 0:
            raise ValueError(f"manifest has dimension={m.dimension}, "
                             f"max_seq_length={m.max_seq_length}: both must be positive")
        bad = [x for x in m.matryoshka_dims if not 0 < x <= m.dimension]
        if bad:
            raise ValueError(f"matryoshka_dims {bad} outside 1..{m.dimension}")
        if m.padding_side not in ("right", "left"):
            raise ValueError(f"padding_side {m.padding_side!r}; valid: 'right', 'left'")
        if m.default_prompt_name and m.default_prompt_name not in m.prompts:
            raise ValueError(f"default_prompt_name {m.default_prompt_name!r} is not one of the "
                             f"prompts {sorted(m.prompts)}")
        recorded = d.get("settings_sha256")
        if recorded is not None and recorded != m.settings_sha256:
            raise ValueError(f"fields that decide the vectors ({', '.join(VECTOR_FIELDS)}) "
                             "differ from what export wrote: the manifest was edited; "
                             "re-export the model (or undo the edit)")
        return m

    def save(self, model_dir: str | Path) -> None:
        write_json(Path(model_dir) / MANIFEST, self.to_dict())

    @classmethod
    def load(cls, model_dir: str | Path) -> ModelManifest:
        return read_manifest(model_dir, cls.from_dict, "mimicsearch export",
                             lambda m: [m.tokenizer_file] + [v.file for v in m.variants])


def verify_file(model_dir: str | Path, name: str, sha256: str) -> Path:
    """Path of `name` in `model_dir` after checking it against its recorded sha256."""
    path = safe_child(model_dir, name)
    if not path.is_file():
        raise FileNotFoundError(f"{path} listed in the manifest is missing")
    actual = sha256_file(path)
    if actual != sha256:
        raise ValueError(f"{path} is corrupted or was modified: sha256 {actual[:12]}… "
                         f"does not match the manifest's {sha256[:12]}…; re-export the model")
    return path
