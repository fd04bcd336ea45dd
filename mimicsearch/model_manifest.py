"""The model directory contract between the export stage and the runtime.

An exported model directory holds ONNX variants (and, with the `openvino` extra, an
OpenVINO one), `tokenizer.json` and `manifest.json`. The runtime trusts only what the
manifest says, and checks file hashes before use.
"""
from __future__ import annotations

import enum
import hashlib
import importlib.util
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .cpu import REQUIREMENTS, meets
from .fileio import MANIFEST, check_kind, read_manifest, safe_child, sha256_file, write_json

FORMAT_VERSION = 1
KIND = "mimicsearch-model"
BATCH_INDEPENDENT = 0.99999


class Precision(str, enum.Enum):
    FP32 = "fp32"
    INT8 = "int8"
    INT4 = "int4"


class Runtime(str, enum.Enum):
    """The runtime that runs a variant's graph."""

    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"

    @property
    def installed(self) -> bool:
        return importlib.util.find_spec(self.value) is not None


@dataclass(frozen=True)
class Parity:
    """How far a variant's embeddings are from the PyTorch model's on held-out texts."""

    cosine_min: float
    cosine_mean: float
    top10_overlap: float
    texts: int
    # Lowest cosine between a text encoded alone and the same text in a batch (None: not
    # measured, exports before this field). Below BATCH_INDEPENDENT a text's vector depends
    # on its neighbours and padding, and the variant is not picked by default.
    batch_cosine_min: float | None = None

    @property
    def batch_independent(self) -> bool:
        return self.batch_cosine_min is None or self.batch_cosine_min >= BATCH_INDEPENDENT

    @classmethod
    def from_dict(cls, d: dict) -> Parity:
        batch = d.get("batch_cosine_min")
        return cls(float(d["cosine_min"]), float(d["cosine_mean"]),
                   float(d["top10_overlap"]), int(d["texts"]),
                   None if batch is None else float(batch))


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
    runtime: Runtime = Runtime.ONNXRUNTIME
    # OpenVINO keeps the weights beside the graph (`.bin` beside `.xml`): hashed like it.
    weights_file: str = ""
    weights_sha256: str = ""
    # Settings the runtime compiles the graph with (OpenVINO: its per-token activation
    # quantization group), read by the runtime so every user runs what the gate measured.
    runtime_config: dict = field(default_factory=dict)
    # Measured by the export on its own host (texts/s, threads, CPU flags): the default
    # variant is the fastest int8 one this host can run.
    speed: dict = field(default_factory=dict)
    # A CPU feature the variant's kernels need to compute exactly (mimicsearch/cpu.py), e.g.
    # "vnni" for full-range int8 weights; "" runs anywhere. Checked before it is run.
    cpu_requires: str = ""

    @property
    def runs_here(self) -> bool:
        """Its runtime is installed and this host's CPU has what it requires."""
        return self.runtime.installed and meets(self.cpu_requires)

    @property
    def name(self) -> str:
        """`int8`, `fp32`, `int4` for onnxruntime; `openvino-int8` for OpenVINO."""
        if self.runtime is Runtime.ONNXRUNTIME:
            return self.precision.value
        return f"{self.runtime.value}-{self.precision.value}"

    @property
    def files(self) -> list[str]:
        return [self.file] + ([self.weights_file] if self.weights_file else [])

    def to_dict(self) -> dict:
        d = asdict(self)
        d["precision"] = self.precision.value
        d["runtime"] = self.runtime.value
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Variant:
        try:
            precision = Precision(d["precision"])
        except ValueError:
            raise ValueError(f"unknown precision {d['precision']!r}; valid: "
                             f"{[p.value for p in Precision]}") from None
        try:
            runtime = Runtime(d.get("runtime", Runtime.ONNXRUNTIME.value))
        except ValueError:
            raise ValueError(f"unknown runtime {d['runtime']!r}; valid: "
                             f"{[e.value for e in Runtime]}") from None
        return cls(
            precision=precision,
            file=str(d["file"]),
            sha256=str(d["sha256"]),
            size_bytes=int(d["size_bytes"]),
            parity=Parity.from_dict(d["parity"]) if d.get("parity") else None,
            usable=bool(d.get("usable", True)),
            reason=str(d.get("reason", "")),
            recipe=dict(d.get("recipe") or {}),
            runtime=runtime,
            weights_file=str(d.get("weights_file", "")),
            weights_sha256=str(d.get("weights_sha256", "")),
            runtime_config={str(k): str(v) for k, v in (d.get("runtime_config") or {}).items()},
            speed=dict(d.get("speed") or {}),
            cpu_requires=str(d.get("cpu_requires", "")),
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

    def variant(self, precision: str | Precision | None = None,
                runtime: str | Runtime | None = None) -> Variant:
        """The requested variant, or by default the usable int8 one this host can run (its
        runtime installed, its CPU requirement met), batch-independent and fastest (as the
        export measured both) first; else fp32, else int4."""
        runtime = _parse(Runtime, runtime) if runtime is not None else None
        precision = _parse(Precision, precision) if precision is not None else None
        listed = [v for v in self.variants
                  if (runtime is None or v.runtime is runtime)
                  and (precision is None or v.precision is precision)]
        if precision is not None or runtime is not None:
            wanted = " ".join(x.value for x in (runtime, precision) if x is not None)
            if not listed:
                raise ValueError(f"no {wanted} variant; available: "
                                 f"{[v.name for v in self.variants if v.usable]}")
            usable = [v for v in listed if v.usable]
            if not usable:
                raise ValueError(f"variant {listed[0].name} failed its parity gate: "
                                 f"{listed[0].reason}")
            runnable = [v for v in usable if v.runs_here]
            if not runnable:
                raise ValueError(unmet_message(usable[0]))
            return _default_order(runnable)[0]
        usable = [v for v in self.variants if v.usable]
        runnable = [v for v in usable if v.runs_here]
        if not runnable:
            raise ValueError("manifest lists no usable variant this host can run"
                             + "".join(f"; {unmet_message(v)}" for v in usable))
        return _default_order(runnable)[0]

    def skipped_here(self) -> list[Variant]:
        """Usable variants the default passes over because this host's CPU lacks what they
        require (a model exported on a VNNI machine, run on an AVX2-only one)."""
        return [v for v in self.variants
                if v.usable and v.runtime.installed and not v.runs_here]

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
                             lambda m: [m.tokenizer_file] + [f for v in m.variants
                                                             for f in v.files])


def unmet_message(v: Variant) -> str:
    if not v.runtime.installed:
        return (f"the {v.name} variant needs {v.runtime.value}: "
                f"pip install 'mimicsearch[{v.runtime.value}]'")
    if v.cpu_requires not in REQUIREMENTS:
        return (f"the {v.name} variant needs a CPU feature this mimicsearch does not know "
                f"({v.cpu_requires!r}); upgrade mimicsearch, or use precision fp32")
    flags = " or ".join(REQUIREMENTS[v.cpu_requires])
    return (f"the {v.name} variant has full-range 8-bit weights, exact only on CPUs with "
            f"{flags}, and this host has none (its int8 products would saturate); use "
            "precision fp32, or re-export with --reduce-range on for an int8 variant that "
            "runs on any CPU")


def _parse(enum_type, value):
    try:
        return enum_type(value)
    except ValueError:
        raise ValueError(f"{value!r}; valid: {[e.value for e in enum_type]}") from None


def _default_order(variants: list[Variant]) -> list[Variant]:
    """int8 first, batch-independent ones first (a re-encoded corpus reproduces its vectors),
    fastest measured first (onnxruntime where none was measured); then fp32, then int4."""
    rank = {Precision.INT8: 0, Precision.FP32: 1, Precision.INT4: 2}
    return sorted(variants, key=lambda v: (rank[v.precision],
                                           not (v.parity is None or v.parity.batch_independent),
                                           -float(v.speed.get("texts_per_s", 0.0)),
                                           v.runtime is not Runtime.ONNXRUNTIME))


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
