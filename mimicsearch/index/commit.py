"""The commit protocol every writer of an index follows, and the sweep of what a killed one
left: new files are written under random names (marked new), then the manifest, then the
files only the old manifest named are unlinked, all under the directory's writer lock. A
reader sees the state before or after a commit, never between.
"""
from __future__ import annotations

from pathlib import Path

from ..fileio import foreign_files, mark_new, sweep_new
from .manifest import IndexManifest

# What an index directory holds besides the files its manifest names: the encoded corpus
# (a directory with its own manifest) and the last add/sync run's rejects.
OWN_SUBDIRS = ("embeddings",)
OWN_FILES = ("manifest.json", "rejects-add.csv", "rejects-sync.csv")


def sweep_orphans(index_dir: Path, m: IndexManifest | None) -> list[str]:
    """Delete what a killed build/add/remove/merge/sync wrote but no manifest names: only
    files those writers marked as new (fileio.mark_new) and temp files, never a file
    mimicsearch did not write. Called under the writer lock, so no live writer owns them."""
    keep = {f.file for f in m.files()} if m is not None else set()
    return sweep_new(index_dir, keep | set(OWN_FILES), OWN_SUBDIRS)


def foreign_in_index(index_dir: Path, m: IndexManifest | None) -> list[str]:
    """Files in an index directory that no writer of an index owns."""
    keep = {f.file for f in m.files()} if m is not None else set()
    return foreign_files(index_dir, keep | set(OWN_FILES), OWN_SUBDIRS)



def commit(index_dir: Path, old: IndexManifest, new: IndexManifest) -> IndexManifest:
    """Make `new` the index's state: validate; mark what only `old` names as replaceable
    (a kill after the manifest write then leaves files the next writer's sweep deletes,
    while a kill before it leaves them named and kept); write the manifest; unlink."""
    new.validate()
    keep = {f.file for f in new.files()}
    for f in old.files():
        if f.file not in keep:
            mark_new(index_dir / f.file)
    new.save(index_dir)
    unlink_replaced(index_dir, old, new)
    return new


def unlink_replaced(index_dir: Path, old: IndexManifest, new: IndexManifest) -> None:
    """After a commit: unlink what only the old manifest named, drop the new-file marks."""
    keep = {f.file for f in new.files()}
    for f in old.files():
        if f.file not in keep:
            (index_dir / f.file).unlink(missing_ok=True)
    sweep_orphans(index_dir, new)
