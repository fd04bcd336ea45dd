"""Atomic writes and hashes: every artifact on disk is either complete or absent."""
from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, TypeVar

T = TypeVar("T")
MANIFEST = "manifest.json"  # every stage directory's contract file


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path`, on error it is removed.

    Readers never see a half-written file, even after kill -9.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


def write_json(path: str | os.PathLike, data: dict) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")


def read_json(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing file: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")  # noqa: TRY004  (bad file content, not a caller bug)
    return data


def check_kind(d: dict, kind: str, written_by: str) -> None:
    """Refuse a manifest of another directory kind (a model directory given where an
    embeddings directory is expected, say). Manifests written before kinds existed have none
    and are judged by their fields alone."""
    got = d.get("kind")
    if got is not None and got != kind:
        raise ValueError(f"kind is {got!r}, expected {kind!r}: not a directory written by "
                         f"`{written_by}`")


def read_manifest(directory: str | os.PathLike, parse: Callable[[dict], T],
                  written_by: str, files: Callable[[T], Iterable[str]]) -> T:
    """Parse `directory/manifest.json`; errors name the file, and no listed file may escape
    the directory (stages meet only through such directories)."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {directory} a directory written by "
                                f"`{written_by}`?")
    try:
        m = parse(read_json(path))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    for name in files(m):
        safe_child(directory, name)
    return m


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def safe_child(root: str | os.PathLike, name: str) -> Path:
    """Resolve a file name taken from a manifest, refusing anything that escapes `root`."""
    root = Path(root).resolve()
    p = (root / name).resolve()
    if p != root and root not in p.parents:
        raise ValueError(f"path {name!r} in {root}/manifest.json escapes its directory")
    return p


class DirectoryBusy(ValueError):
    """Another process is writing the directory."""


_held: set[Path] = set()


@contextlib.contextmanager
def writer_lock(directory: str | os.PathLike) -> Iterator[None]:
    """One writer at a time per output directory: two `add`s racing would each write a
    manifest and one update would be lost. The lock (flock on DIR/.lock) is released by the
    OS when its process dies, so a killed run never leaves it stuck; re-entrant within a
    process. Where flock does not exist (Windows) it is a no-op."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        yield
        return
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = directory.resolve()
    if key in _held:
        yield
        return
    with open(directory / ".lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DirectoryBusy(f"{directory} is being written by another process; wait for "
                                "it to finish (its lock: .lock)") from None
        _held.add(key)
        try:
            yield
        finally:
            _held.discard(key)
            fcntl.flock(f, fcntl.LOCK_UN)


def writer(param: str):
    """Run the decorated function under the writer lock of its directory argument `param`,
    however it is passed (positionally or by keyword)."""
    def wrap(fn):
        signature = inspect.signature(fn)
        if param not in signature.parameters:
            raise TypeError(f"{fn.__qualname__} has no parameter {param!r} to lock")

        @functools.wraps(fn)
        def locked(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            with writer_lock(bound.arguments[param]):
                return fn(*args, **kwargs)
        locked.locks = param
        return locked
    return wrap
