"""The store's files are the owner's only: a new database file is created with mode 0600.

SQLite creates the ``-wal``, ``-shm`` and ``-journal`` files of a database with the database
file's own mode (its unix VFS copies it), so they are 0600 too. A backup is made with
``private_file`` first. An existing file with group or other bits is left as the operator set
it and named in a warning (no value, only the mode).
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path
from typing import Final

import structlog

OWNER_ONLY: Final = 0o600
log = structlog.get_logger("wor_bridge.store")


def private_file(path: str | Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (then warn when it is wider);
    ``:memory:`` and SQLite URIs are left alone. Raises ``OSError`` when it cannot be made."""
    name = str(path)
    if name in ("", ":memory:") or name.startswith("file:"):
        return
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, OWNER_ONLY)
    except FileExistsError:
        mode = stat.S_IMODE(Path(name).stat().st_mode)
        if mode & 0o077:
            log.warning("store_file_not_private", file=Path(name).name, mode=f"{mode:04o}")
        return
    os.close(fd)
    Path(name).chmod(OWNER_ONLY)  # exactly 0600 whatever the umask let through


def unusable(path: str | Path, err: sqlite3.Error | OSError) -> str:
    """Why the store at ``path`` cannot be opened or upgraded, for a ``StoreError``: the error's
    kind and SQLite's or the system's own short text (no value of the store), and when its
    directory is not writable, that (SQLite's WAL needs its ``-wal`` and ``-shm`` files there,
    an upgrade its backup)."""
    text = err.strerror if isinstance(err, OSError) else str(err)
    message = f"{path}: cannot open or upgrade the store ({type(err).__name__}: {text})"
    folder = Path(path).parent
    if not os.access(folder, os.W_OK):
        message += (
            f"; its directory is not writable: {folder} (SQLite needs to create the store's"
            " -wal and -shm files there, and an upgrade its backup)"
        )
    return message
