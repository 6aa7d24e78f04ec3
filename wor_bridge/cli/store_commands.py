"""Store commands: ``backup DEST`` (a consistent copy of the live store) and ``purge``.

``backup`` never opens the store through the migrations (a backup of an older store is what one
wants before upgrading it) and never creates one: a missing store is exit 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from wor_bridge.adapters.sqlite_backup import backup_store
from wor_bridge.config import load_app


def _print(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def cmd_backup(args: argparse.Namespace) -> int:
    """Copy the configured store to ``DEST`` and print where, size, schema version, integrity."""
    config = load_app(args.config)
    made = backup_store(Path(config.store.path), args.dest, dt.datetime.now(dt.UTC))
    _print(
        {
            "backup": str(made.path),
            "bytes": made.size,
            "schema_version": made.schema_version,
            "integrity": made.integrity,
        }
    )
    return 0


def add_commands(sub: Any) -> None:
    """Add ``backup`` and ``purge`` to the CLI's subparsers."""
    backup = sub.add_parser(
        "backup", help="copy the store consistently while the service runs (SQLite online backup)"
    )
    backup.add_argument("dest", type=Path, help="backup file to create, or an existing directory")
    backup.add_argument("--config", type=Path, default=None, help="TOML configuration file")
    backup.set_defaults(func=cmd_backup)
