"""Store commands: ``backup DEST`` (a consistent copy of the live store) and ``purge
[--dry-run]`` (the retention purge now; prints the counts, audited unless a dry run).

``backup`` never opens the store through the migrations (a backup of an older store is what one
wants before upgrading it) and never creates one: a missing store is exit 1, as is a PostgreSQL
store (the database's own backups copy it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from wor_bridge import bootstrap
from wor_bridge.adapters.sqlite_backup import backup_store
from wor_bridge.config import load_app
from wor_bridge.usecases import retention


def _print(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def cmd_backup(args: argparse.Namespace) -> int:
    """Copy the configured store to ``DEST`` and print where, size, schema version, integrity."""
    config = load_app(args.config)
    if config.store.backend == "postgresql":
        print(
            "wor-bridge: backup copies a SQLite store; with PostgreSQL use the database's own"
            " backups (pg_basebackup with WAL archiving, or the managed service's)",
            file=sys.stderr,
        )
        return 1
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


def cmd_purge(args: argparse.Namespace) -> int:
    """Run the retention purge now (``--dry-run``: count only) and print the counts."""
    c = bootstrap.load(args.config, create=False)  # an operator command never creates a store
    counts = retention.purge(
        c.store, c.config.retention, c.clock, operator=args.operator, dry_run=args.dry_run
    )
    _print(
        {
            "dry_run": args.dry_run,
            "referrals": counts.referrals,
            "payloads": counts.payloads,
            "audit": counts.audit,
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
    purge = sub.add_parser(
        "purge", help="remove patient data and audit records past their retention ([retention])"
    )
    purge.add_argument("--dry-run", action="store_true", help="count only; change nothing")
    purge.add_argument("--operator", default="operator", help="who acts (recorded in the audit)")
    purge.add_argument("--config", type=Path, default=None, help="TOML configuration file")
    purge.set_defaults(func=cmd_purge)
