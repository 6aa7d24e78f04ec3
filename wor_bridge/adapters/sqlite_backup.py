"""A consistent copy of a live SQLite store (``wor-bridge backup DEST``).

SQLite's online backup API reads one snapshot of the database through a connection of its own:
what was committed when the copy started is in it, whole, while the service keeps writing (a
plain ``cp`` of a live WAL store misses what is still in the ``-wal`` file). The copy is written
to ``DEST.partial`` (created 0600), checked with ``PRAGMA integrity_check``, synced and renamed
to ``DEST``, so ``DEST`` is either a complete checked copy or absent.

Restore: stop the service, move the store file and its ``-wal``/``-shm`` files aside, copy the
backup to the store's path, start the service; an older backup is upgraded by the migrations.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from wor_bridge.adapters.sqlite_schema import backup_to, schema_version
from wor_bridge.errors import StoreError


@dataclass(frozen=True, slots=True)
class Backup:
    """A finished backup: where, its size in bytes, its schema version, its integrity result."""

    path: Path
    size: int
    schema_version: int
    integrity: str


def destination(store: Path, dest: Path, now: dt.datetime) -> Path:
    """``dest``, or inside an existing directory ``<store name>.<UTC time>.bak``."""
    if dest.is_dir():
        return dest / f"{store.name}.{now.strftime('%Y%m%dT%H%M%SZ')}.bak"
    return dest


def backup_store(store: Path, dest: Path, now: dt.datetime) -> Backup:
    """Copy the store at ``store`` to ``dest`` (see the module docstring).

    Raises StoreError when the store is missing (it is never created here), the destination
    exists (never overwritten), or the copy fails its integrity check (the partial file is
    removed).
    """
    if not store.is_file():
        raise StoreError(f"{store}: no store file there (nothing to back up)")
    target = destination(store, dest, now)
    if target.exists():
        raise StoreError(f"{target}: exists; a backup never overwrites a file")
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)  # left by an interrupted earlier run
    with closing(sqlite3.connect(store)) as source:  # it exists: nothing is created
        backup_to(source, partial)
    try:
        integrity, version = _check(partial)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.rename(target)
    return Backup(target, target.stat().st_size, version, integrity)


def _check(copy_path: Path) -> tuple[str, int]:
    """Integrity check and schema version of a copy, then fsync it; raises StoreError."""
    with closing(sqlite3.connect(copy_path)) as copy:
        integrity = str(copy.execute("PRAGMA integrity_check").fetchone()[0])
        version = schema_version(copy)
    if integrity != "ok":
        raise StoreError(f"{copy_path}: the copy failed its integrity check")
    with copy_path.open("rb") as handle:
        os.fsync(handle.fileno())
    return integrity, version
