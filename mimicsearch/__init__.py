"""mimicsearch runtime: encode clinical notes with an exported model and search them (no torch).

The Python API, in the order a job uses it::

    from mimicsearch import (Encoder, EncodeOptions, BuildOptions, build_index_from,
                             sync_notes, Searcher, Filters)

Names load on first use, so `import mimicsearch` stays cheap for the command line.
"""
from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mimicsearch")
except PackageNotFoundError:  # pragma: no cover (a source tree that was never installed)
    __version__ = "0+unknown"

_EXPORTS = {
    "Encoder": "encoder", "LongMode": "encoder",
    "EncodeOptions": "options", "EncodeSummary": "corpus", "encode_corpus": "corpus",
    "BuildOptions": "index", "ChangeResult": "index", "apply_changes": "index",
    "add_to_index": "index", "remove_from_index": "index", "open_index": "index",
    "index_info": "index", "merge_shards": "index", "compact_index": "index",
    "IndexSummary": "pipeline", "build_index_from": "pipeline", "add_notes": "pipeline",
    "sync_notes": "pipeline", "encode_notes": "pipeline", "TruncationWarning": "pipeline",
    "Searcher": "search", "Hit": "search", "Results": "search", "Filters": "filters",
    "DirectoryBusy": "fileio", "MalformedInputError": "readers",
    "calibrate_index": "calibrate", "Fusion": "fusion",
    "NoteSchema": "schema", "SchemaError": "schema", "detect_schema": "schema",
}
__all__ = ["__version__", *sorted(_EXPORTS)]  # noqa: PLE0604


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'mimicsearch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
