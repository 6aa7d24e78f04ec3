"""Operator commands: ``serve``, ``deliver``, ``poll``, ``directory sync`` (``--once``) and
``outbox ...``.

``outbox show`` prints no patient data unless ``--reveal`` is given, and a reveal is audited.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from wor_bridge import bootstrap
from wor_bridge.core.outbox import STATES
from wor_bridge.records import AuditEvent, OutboxEntry
from wor_bridge.usecases import outbox_repair


def _print(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def _summary(entry: OutboxEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "task_id": entry.task_id,
        "destination": entry.destination,
        "state": entry.state,
        "attempts": entry.attempts,
        "created_at": entry.created_at.isoformat(),
        "next_attempt_at": entry.next_attempt_at.isoformat() if entry.state == "pending" else None,
        "delivered_at": entry.delivered_at.isoformat() if entry.delivered_at else None,
        "last_status": entry.last_status,
        "last_error": entry.last_error,
    }


EXIT_USAGE = 64
"""Exit code of a command line that cannot be used (sysexits ``EX_USAGE``)."""


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the HTTP service with its dispatcher until interrupted.

    Needs ``--config`` (exit 64 without: the shipped example has no keys). The socket is bound
    before the app is built, so a port in use is one line and exit 1 (``OperationError``).
    """
    from wor_bridge.service import server  # noqa: PLC0415 - only the serve command needs it
    from wor_bridge.service.app import create_app  # noqa: PLC0415

    if args.config is None:
        print(
            "wor-bridge: serve needs --config FILE (wor-bridge init DIR writes a starter "
            "configuration; the shipped example has no keys)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    components = bootstrap.load(args.config)
    service = components.config.service
    sock = server.listen_socket(service.host, service.port)
    server.serve(create_app(components), service, components.config.path.parent, sock)
    return 0


def cmd_deliver(args: argparse.Namespace) -> int:
    """Deliver what is due once (cron style) and print a count per result."""
    from wor_bridge.service.dispatcher import Dispatcher  # noqa: PLC0415

    components = bootstrap.load(args.config, create=False)
    attempts = Dispatcher(components).run_once()
    results: dict[str, int] = {}
    from wor_bridge.usecases.delivery import outcome_name  # noqa: PLC0415

    for attempt in attempts:
        name = outcome_name(attempt.outcome)
        results[name] = results.get(name, 0) + 1
    _print({"attempts": len(attempts), "results": results})
    return 0


def cmd_poll(args: argparse.Namespace) -> int:
    """Poll the destinations with ``poll = true`` once (cron style) and print counts."""
    from wor_bridge.usecases.polling import Poller  # noqa: PLC0415

    rounds = Poller(bootstrap.load(args.config, create=False)).run_once()
    _print([dataclasses.asdict(r) for r in rounds])
    return 0


def cmd_directory(args: argparse.Namespace) -> int:
    """One sync round of the care-services directory replica; 0 when it completed, else 1."""
    from wor_bridge.usecases.directory_sync import DirectorySync  # noqa: PLC0415

    components = bootstrap.load(args.config, create=False)
    result = DirectorySync(components).run_once(full=args.full)
    replica = components.directory
    counts = replica.counts() if replica is not None else {}
    _print({**dataclasses.asdict(result), "resources": counts})
    return 0 if result.complete else 1


def cmd_outbox(args: argparse.Namespace) -> int:
    """Inspect and repair the outbox."""
    c = bootstrap.load(args.config, create=False)
    store, now = c.store, c.clock.now()
    operator = args.operator
    if args.action == "list":
        _print([_summary(e) for e in store.list_entries(args.state, args.limit)])
        return 0
    if args.action == "show":
        entry = store.get_entry(args.id)
        if entry is None:
            print(f"wor-bridge: no outbox entry {args.id}", file=sys.stderr)
            return 1
        out = _summary(entry)
        if args.reveal:
            record = store.get_referral(entry.task_id)
            store.audit(
                AuditEvent(
                    event="outbox_reveal",
                    action="R",
                    outcome="success",
                    user=operator,
                    responsible=operator,
                    source_system=record.source_system if record else "",
                    patient_id=record.patient_id if record else "",
                    object_type="Task",
                    object_id=entry.task_id,
                ),
                now,
            )
            out["payload"] = json.loads(entry.payload)
        _print(out)
        return 0
    if args.action == "retry":
        repair = outbox_repair.retry(
            store, c.config.core, c.clock, None if args.all_dead else [args.id], operator=operator
        )
        if not args.all_dead and repair.refused:
            why = repair.refused[args.id]
            print(
                f"wor-bridge: no outbox entry {args.id}"
                if why == "unknown"
                else f"wor-bridge: outbox entry {args.id} not retried: {why}",
                file=sys.stderr,
            )
            return 1
    else:  # replay
        repair = outbox_repair.replay(store, c.config.core, c.clock, args.since, operator=operator)
    refused = [{"id": i, "reason": why} for i, why in repair.refused.items()]
    _print({"requeued": len(repair.requeued), "refused": refused})
    return 0


def iso_moment(text: str) -> dt.datetime:
    """``--since``: an ISO 8601 date or date-time (UTC when it has no zone); else a usage error."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "expected an ISO 8601 date or date-time, e.g. 2026-11-02 or 2026-11-02T10:15:00+01:00"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def add_commands(sub: Any) -> None:
    """Add serve, deliver and outbox to the CLI's subparsers."""

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", type=Path, default=None, help="TOML configuration file")
        return p

    serve = with_config(sub.add_parser("serve", help="run the HTTP service and dispatcher"))
    serve.set_defaults(func=cmd_serve)
    deliver = with_config(sub.add_parser("deliver", help="deliver due outbox entries"))
    deliver.add_argument("--once", action="store_true", required=True, help="one round, then exit")
    deliver.set_defaults(func=cmd_deliver)
    poll = with_config(sub.add_parser("poll", help="poll welfare FHIR servers for Task changes"))
    poll.add_argument("--once", action="store_true", required=True, help="one round, then exit")
    poll.set_defaults(func=cmd_poll)
    directory = sub.add_parser("directory", help="the care-services directory replica")
    directory_actions = directory.add_subparsers(dest="action", required=True)
    sync = with_config(directory_actions.add_parser("sync", help="sync the replica (mCSD)"))
    sync.add_argument("--once", action="store_true", required=True, help="one round, then exit")
    sync.add_argument("--full", action="store_true", help="reload everything (initial load)")
    sync.set_defaults(func=cmd_directory)
    box = with_config(sub.add_parser("outbox", help="inspect and repair the outbox"))
    box.add_argument("--operator", default="operator", help="who acts (recorded in the audit)")
    # the same options are accepted after the action too (``outbox list --config FILE``)
    after = argparse.ArgumentParser(add_help=False)
    after.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    after.add_argument("--operator", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    actions = box.add_subparsers(dest="action", required=True)
    lst = actions.add_parser("list", help="list entries (no patient data)", parents=[after])
    lst.add_argument("--state", choices=STATES, default=None)
    lst.add_argument("--limit", type=int, default=100)
    show = actions.add_parser(
        "show", help="one entry; --reveal adds the payload (audited)", parents=[after]
    )
    show.add_argument("id", type=int)
    show.add_argument("--reveal", action="store_true")
    retry = actions.add_parser(
        "retry",
        help="requeue a dead entry, or all of them (never out of its Task's order)",
        parents=[after],
    )
    group = retry.add_mutually_exclusive_group(required=True)
    group.add_argument("id", type=int, nargs="?")
    group.add_argument("--all-dead", action="store_true")
    replay = actions.add_parser(
        "replay",
        help="requeue delivered referrals whose Task is still requested (same bytes)",
        parents=[after],
    )
    replay.add_argument(
        "--since", required=True, type=iso_moment, help="ISO date or datetime (UTC if no zone)"
    )
    box.set_defaults(func=cmd_outbox)
