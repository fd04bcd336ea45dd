"""The encode options: what decides an encode run's rows and vectors.

Both engines take one `EncodeOptions`, the embeddings manifest records it, the index
manifest copies it, and `add` and `query` read it back to encode new text the same way.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .encoder import LongMode
from .readers import IdType, InputFormat
from .schema import parse_columns


@dataclass(frozen=True)
class EncodeOptions:
    text_col: str | None = None  # default: the layout's (TEXT, text, note_text)
    id_col: str | None = None  # default: the layout's (ROW_ID, note_id), else the row number
    keep: tuple[str, ...] | None = None  # metadata columns; None: every role's column
    id_type: str = IdType.AUTO.value
    # Roles of the note table's columns (schema.py), "id=nid,subject=pt,…"; None: the
    # layout detected from the columns (MIMIC-III, MIMIC-IV-Note, OMOP).
    columns: str | None = None
    input_format: str | None = None  # default: from the file name
    prompt: str | None = "document"
    dim: int | None = None  # Matryoshka dimension (None: the model's)
    long: str = LongMode.TRUNCATE.value
    max_length: int | None = None  # tokens per note (None: the model's max_seq_length)
    precision: str | None = None  # model variant (None: the default, see ModelManifest.variant)
    runtime: str | None = None  # onnxruntime or openvino (None: the default variant's)
    # Keep each note's opening (for hit display) beside the shards: clinical text on disk, so
    # off for `encode` unless asked; `build-index` turns it on (its store shows snippets).
    snippets: bool = False
    # Keep each note's whole text too (the server's note view): clinical text on disk again,
    # so off for `encode` unless asked; `build-index` turns it on unless told not to.
    full_text: bool = False

    def __post_init__(self):
        if self.columns is not None:
            spec = parse_columns(self.columns)
            object.__setattr__(self, "columns", ",".join(f"{k}={v}" for k, v in spec.items())
                               or None)
        if self.keep is not None and not isinstance(self.keep, tuple):
            if isinstance(self.keep, str):
                raise TypeError(f"keep={self.keep!r}: give a list of column names")
            object.__setattr__(self, "keep", tuple(self.keep))
        for name, enum in (("id_type", IdType), ("long", LongMode), ("input_format", InputFormat)):
            value = getattr(self, name)
            if value is None:
                continue
            try:
                object.__setattr__(self, name, enum(value).value)
            except ValueError:
                raise ValueError(f"{name}={value!r}; valid: {[e.value for e in enum]}") from None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["keep"] = None if self.keep is None else list(self.keep)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> EncodeOptions:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown encode options {unknown}; valid: {sorted(names)}")
        return cls(**d)

    def replace(self, **changes) -> EncodeOptions:
        return dataclasses.replace(self, **changes)
