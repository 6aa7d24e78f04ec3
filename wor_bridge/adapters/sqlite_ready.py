"""``OutboxStore.check_writable`` for the SQLite store: is a write acknowledged now durable?

- **The same file.** The identity (``st_dev``, ``st_ino``) of the store file is taken when the
  store opens it (with a connection held open from then on, so the inode number cannot be given
  to a new file while the store lives); a path that no longer exists (``store-removed``) or names
  another file (``store-replaced``) means the open connections write into a file nobody will
  read again (SQLite keeps writing into an unlinked inode and reports success): every write
  acknowledged from then on is lost at the next start.
- **Free space** on the filesystem of the store's directory (``os.statvfs``, the blocks an
  unprivileged writer may use), below ``min_free_bytes``: ``disk-low``. WAL, checkpoints and
  backups need room; a full disk fails commits half way through an intake.
- **A real commit** (``probe``): a new connection opened read-write without creating anything
  (``mode=rw``) updates the one row of ``ready_probe`` in a ``BEGIN IMMEDIATE`` transaction and
  commits with ``synchronous=FULL``. It fails on a file or filesystem that became read-only
  (SQLite falls back to read-only: ``SQLITE_READONLY``), on I/O errors, and on a write lock held
  longer than ``PROBE_BUSY_S``: ``store-not-writable``. A new connection, not the service's
  own: those keep their descriptors and would not notice a file made read-only.

The table ``ready_probe`` is made by migration step 8 (one row, no patient data).

Once the file exists the store's own connections open it with ``mode=rw`` too (a thread that
connects after the file was removed gets an error, not a new empty store), a connection opened
while the file was read-only is replaced once it is writable again, and one that fails with
``SQLITE_READONLY`` is closed so the next write opens the file again.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Final

_SQLITE_READONLY: Final = 8
PROBE_BUSY_S: Final = 2.0
"""How long the probe waits for the write lock before the store counts as not writable."""

SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS ready_probe (id INTEGER PRIMARY KEY CHECK (id = 1), at REAL);"
)
"""The probe's table (migration step 8): one row, the time of the last probe."""
_PROBE: Final = (
    "INSERT INTO ready_probe (id, at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET at = excluded.at"
)


def file_identity(path: str) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of the file at ``path``, or None when there is none."""
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def free_bytes(path: str) -> int:
    """Bytes an unprivileged writer may still use on the filesystem holding ``path``'s directory.

    Raises OSError when the directory cannot be examined."""
    st = os.statvfs(Path(path).absolute().parent)
    return st.f_bavail * st.f_frsize


def read_only_error(err: sqlite3.Error) -> bool:
    """True for ``SQLITE_READONLY`` (any extended code): the connection opened read-only."""
    return (getattr(err, "sqlite_errorcode", 0) & 0xFF) == _SQLITE_READONLY


def rw_uri(path: str) -> str:
    """The SQLite URI that opens the existing file at ``path`` read-write and never creates it."""
    return Path(path).absolute().as_uri() + "?mode=rw"


def probe_commit(path: str) -> bool:
    """Commit one row update through a new read-write connection; False when that fails."""
    try:
        conn = sqlite3.connect(rw_uri(path), uri=True, timeout=PROBE_BUSY_S, isolation_level=None)
    except sqlite3.Error:
        return False
    try:
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(_PROBE, (time.time(),))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    except sqlite3.Error:
        return False
    finally:
        conn.close()
    return True


class SqliteReadiness:
    """Mixin of ``SqliteOutboxStore``: remembers the file it opened, and checks it."""

    path: str
    _opened: tuple[int, int] | None = None

    def _remember_file(self) -> None:
        """Take the identity of the store file (call once the file exists)."""
        self._opened = file_identity(self.path)

    def _writable(self) -> bool:
        """Whether the store file may be opened for writing now (``os.access``, which also
        sees the immutable flag as root). A connection opened while it may not is read-only
        (SQLite falls back silently); the store opens a new one once the file is writable."""
        return os.access(self.path, os.W_OK)

    def check_writable(self, min_free_bytes: int = 0, *, probe: bool = True) -> str | None:
        """None when a write acknowledged now is durable, else the check that failed
        (``store-removed``, ``store-replaced``, ``disk-low``, ``store-not-writable``)."""
        now = file_identity(self.path)
        if now is None:
            return "store-removed"
        if now != self._opened:
            return "store-replaced"
        if min_free_bytes > 0:
            try:
                if free_bytes(self.path) < min_free_bytes:
                    return "disk-low"
            except OSError:
                return "store-not-writable"
        if probe and not probe_commit(self.path):
            return "store-not-writable"
        return None
