"""``wor-bridge store``: the keys that encrypt the store at rest (README, Encryption at rest).

``store new-key ID`` prints a fresh key entry (``ID:BASE64``, 32 random bytes) for a key file
or the key variable; nothing is stored. ``store rotate-key`` moves every referral and outbox
entry to the active key (the first entry) in batches of ``--batch`` rows, each its own
transaction: a run that stops can be started again. It prints the counts and, per key, the
audit records still sealed with it (append-only: keep that key until they are purged); the run
is audited (``store_rotate_key``). Exit 0 done, 1 no key or a value that does not open. On
PostgreSQL each batch locks its rows (``FOR UPDATE``), so it runs beside serving replicas.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import structlog

from wor_bridge import bootstrap
from wor_bridge.adapters.sealing import KEY_ID, SealingError, new_key_entry
from wor_bridge.config import load_app
from wor_bridge.ports import ResealingStore
from wor_bridge.records import AuditEvent

log = structlog.get_logger("wor_bridge.store")


def _key_id(text: str) -> str:
    if not KEY_ID.match(text):
        raise argparse.ArgumentTypeError("a key id is 1 to 32 of A-Z a-z 0-9 _ -")
    return text


def _batch(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError("a number of rows, 1 or more")
    return value


def cmd_new_key(args: argparse.Namespace) -> int:
    """Print a new ``ID:BASE64`` key entry."""
    sys.stdout.write(new_key_entry(args.id) + "\n")
    return 0


def cmd_rotate_key(args: argparse.Namespace) -> int:
    """Seal every row again under the active key, batch by batch; audited."""
    config = load_app(args.config)
    components = bootstrap.build(config, read_clear=True, create=False)  # also a clear store
    store, clock = components.store, components.clock
    if not isinstance(store, ResealingStore):
        print("wor-bridge: this store cannot rotate keys", file=sys.stderr)
        return 1
    referrals = entries = 0
    key_id, outcome, problem = "", "success", ""
    try:
        while True:
            moved = store.reseal(args.batch)
            key_id = moved.key_id
            referrals, entries = referrals + moved.referrals, entries + moved.entries
            if moved.referrals == moved.entries == 0:
                break
            log.info("store_reseal_batch", referrals=moved.referrals, entries=moved.entries)
    except SealingError as err:
        outcome, problem = "failed", str(err)
    audit_keys = store.audit_keys()
    summary: dict[str, Any] = {
        "active_key": key_id or None,
        "referrals": referrals,
        "outbox_entries": entries,
        "audit_records_per_key": audit_keys,
    }
    store.audit(
        AuditEvent(
            event="store_rotate_key",
            action="U",
            outcome=outcome,
            user=args.operator,
            responsible=args.operator,
            source_system="",
            object_type="Store",
            object_id=key_id,
            detail=json.dumps({k: v for k, v in summary.items() if k != "active_key"}),
        ),
        clock.now(),
    )
    if problem:
        print(f"wor-bridge: store rotate-key stopped: {problem}", file=sys.stderr)
        return 1
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    return 0


def add_commands(sub: Any) -> None:
    """Add ``store new-key`` and ``store rotate-key`` to the CLI's subparsers."""
    store = sub.add_parser("store", help="keys of the store's encryption at rest")
    actions = store.add_subparsers(dest="action", required=True)
    new = actions.add_parser("new-key", help="print a new key entry ID:BASE64 (stores nothing)")
    new.add_argument("id", type=_key_id, help="the key's id, e.g. 2026-12")
    new.set_defaults(func=cmd_new_key)
    rotate = actions.add_parser(
        "rotate-key", help="seal every row again under the active key (resumable, audited)"
    )
    rotate.add_argument("--config", type=Path, default=None, help="TOML configuration file")
    rotate.add_argument("--batch", type=_batch, default=500, help="rows per transaction")
    rotate.add_argument("--operator", default="operator", help="who acts (recorded in the audit)")
    rotate.set_defaults(func=cmd_rotate_key)
