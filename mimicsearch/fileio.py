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
# atomic_path's temp files are ".NAME.mimicsearch-tmp.PID": the only files a writer may
# delete that no manifest of its own names.
TEMP_MARK = ".mimicsearch-tmp."


# A writer about to create NAME first creates ".NAME.mimicsearch-new": a file a killed run
# left and no manifest names can then be told from a user's file of the same name.
NEW_MARK = ".mimicsearch-new"
LOCK = ".lock"


def is_temp_name(name: str) -> bool:
    """Whether `name` is one of atomic_path's temp files (a killed writer's leftover)."""
    return name.startswith(".") and TEMP_MARK in name and name.rsplit(".", 1)[-1].isdigit()


def is_ours_hidden(name: str) -> bool:
    """Our bookkeeping files: temp files, new-file marks, the writer lock."""
    return name == LOCK or is_temp_name(name) or (name.startswith(".")
                                                  and name.endswith(NEW_MARK))


def mark_new(path: str | os.PathLike) -> Path:
    """Record that this writer creates `path` (call before creating it): if the run dies
    before a manifest names it, the next writer may delete it, and only then."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_name(f".{path.name}{NEW_MARK}").touch()
    return path


def _marked(mark: Path) -> Path:
    """The file a new-file mark stands for."""
    return mark.with_name(mark.name[1:-len(NEW_MARK)])


def sweep_new(root: str | os.PathLike, keep: Iterable[str],
              skip_below: Iterable[str] = ()) -> list[str]:
    """Delete what killed writers left under `root`: atomic_path temp files, and files they
    marked as new that `keep` (paths relative to root, e.g. a manifest's files) does not
    name; then drop the marks. Nothing else is ever deleted, and nothing below
    `skip_below` (subdirectories with a manifest of their own). Returns what was deleted."""
    import shutil

    root = Path(root)
    keep = set(keep)
    skip = tuple(f"{d.rstrip('/')}/" for d in skip_below)
    removed = []
    if not root.is_dir():
        return removed
    for p in sorted(root.rglob("*")):
        name = p.relative_to(root).as_posix()
        if is_temp_name(p.name) and p.is_file() and not name.startswith(skip):
            p.unlink()
            removed.append(name)
    for mark in sorted(root.rglob(f".*{NEW_MARK}")):
        target = _marked(mark)
        name = target.relative_to(root).as_posix()
        if name.startswith(skip):
            continue
        if name not in keep and (target.exists() or target.is_symlink()):
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink()
            removed.append(name)
        mark.unlink(missing_ok=True)
    return removed


def foreign_files(root: str | os.PathLike, ours: Iterable[str],
                  ours_below: Iterable[str] = ()) -> list[str]:
    """Files under `root` that no writer of ours owns: not in `ours` (relative paths), not
    below one of `ours_below` (subdirectories with a contract of their own), not marked
    new, not our bookkeeping. A directory holding any is refused, never cleaned."""
    root = Path(root)
    ours, below = set(ours), tuple(f"{d.rstrip('/')}/" for d in ours_below)
    if not root.is_dir():
        return []
    marked = {_marked(m).relative_to(root).as_posix()
              for m in root.rglob(f".*{NEW_MARK}")}
    out = []
    for p in sorted(root.rglob("*")):
        name = p.relative_to(root).as_posix()
        if p.is_dir() and not p.is_symlink():
            if name in marked:  # a marked directory and everything in it is ours
                marked |= {q.relative_to(root).as_posix() for q in p.rglob("*")}
            continue
        if (name in ours or name in marked or is_ours_hidden(p.name) or name.startswith(below)
                or any(name.startswith(f"{m}/") for m in marked)):
            continue
        out.append(name)
    return out


def refuse_foreign(root: str | os.PathLike, foreign: list[str], what: str, fix: str) -> None:
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5
                                          else "")
        raise FileExistsError(f"{root} holds files {what} did not write ({shown}); nothing "
                              f"was changed: {fix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, new: bool = False) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path`, on error it is removed.

    Readers never see a half-written file, even after kill -9. `new`: `path` is a file this
    writer creates (see mark_new).
    """
    path = mark_new(path) if new else Path(path)
    tmp = path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")
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
    except (TypeError, AttributeError, KeyError) as e:  # a field of the wrong JSON type
        raise ValueError(f"{path}: a field has the wrong type or shape ({e}); it was edited "
                         f"or damaged: write the directory again with `{written_by}`") from None
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
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    key = directory.resolve()
    if key in _held:
        yield
        return
    with open(directory / LOCK, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DirectoryBusy(f"{directory} is being written by another process; wait for "
                                "it to finish (its lock: .lock)") from None
        _held.add(key)
        try:
            yield
        except BaseException:
            if created and [p.name for p in directory.iterdir()] == [LOCK]:
                (directory / LOCK).unlink()  # a refused run leaves no empty directory
                directory.rmdir()
            raise
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
