"""``wor-bridge``: ``map``, ``validate``, ``demo``, ``serve``, ``deliver``, ``poll``, ``outbox``,
``store``, ``backup``, ``purge``, ``init``, ``key``.

``map`` and ``validate`` read FHIR R4, or FHIR STU3 (``--fhir-version 3.0``; by default an input
holding a ``ReferralRequest`` is STU3, since R4 has no such type): STU3 is converted and then
mapped exactly as R4 (``core/stu3/intake.py``), its refusals located in the STU3 input.

Exit codes: 0 done, 2 the referral was refused (the OperationOutcome is on stdout), 1 internal,
configuration or store error (e.g. a store newer than the program), or an operation that cannot
be done (no store at the path, a port in use; a one-line message on stderr, no patient data), 64
a command line that cannot be used (argparse's errors included, a bad date, ``serve`` without
``--config``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import typing
from pathlib import Path

import structlog

from wor_bridge import config, logs
from wor_bridge.cli import account, operator, report, setup, store, store_commands
from wor_bridge.core import fhir, translation
from wor_bridge.core.outcome import information, operation_outcome
from wor_bridge.core.stu3 import intake as stu3_intake
from wor_bridge.errors import ConfigError, OperationError, RefusedError, StoreError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_REFUSED = 2
EXIT_USAGE = operator.EXIT_USAGE

log = structlog.get_logger("wor_bridge.cli")


def _read_input(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    return Path(name).read_bytes()


def _write(data: bytes) -> None:
    sys.stdout.buffer.write(data + b"\n")
    sys.stdout.flush()


def _is_stu3(args: argparse.Namespace, data: bytes) -> bool:
    """``--fhir-version``: 3.0 or 4.0 as given; ``auto`` is STU3 when a ReferralRequest is in it."""
    if args.fhir_version == "auto":
        return stu3_intake.looks_stu3(data)
    return bool(args.fhir_version == "3.0")


def _cmd_map(args: argparse.Namespace) -> int:
    settings = config.load(args.config)
    data = _read_input(args.input)
    translate = stu3_intake.translate if _is_stu3(args, data) else translation.translate
    try:
        result = translate(data, None, settings)
    except RefusedError as err:
        _write(fhir.canonical_json(operation_outcome(err.issues), pretty=True))
        log.info("referral_refused", issues=len(err.issues), kind=type(err).__name__)
        return EXIT_REFUSED
    if args.format == "xml":
        _write(fhir.to_xml(result.bundle))
    else:
        _write(fhir.canonical_json(result.bundle, pretty=True))
    log.info(
        "referral_mapped",
        destination=result.destination.id,
        mapping=result.mapping_ref,
        task_id=result.ids.task,
    )
    return EXIT_OK


def _cmd_validate(args: argparse.Namespace) -> int:
    settings = config.load(args.config)
    data = _read_input(args.input)
    check = stu3_intake.check if _is_stu3(args, data) else translation.check
    try:
        checked = check(data, None, settings)
    except RefusedError as err:
        _write(fhir.canonical_json(operation_outcome(err.issues), pretty=True))
        return EXIT_REFUSED
    message = f"referral passes every gate; destination {checked.destination.id}"
    _write(fhir.canonical_json(information(message), pretty=True))
    return EXIT_OK


def _cmd_demo(_args: argparse.Namespace) -> int:
    from wor_bridge.demo import scenario  # noqa: PLC0415 - the demo pulls in the server

    return scenario.run()


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors as exit 64 (EX_USAGE): 2 means "refused" here."""

    def error(self, message: str) -> typing.NoReturn:
        """Print the usage and ``message`` on stderr; exit 64."""
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by the README's command reference)."""
    parser = _Parser(
        prog="wor-bridge",
        description="Welzijn op Recept referrals from GP systems to welfare organisations "
        "(FHIR R4): map, serve, deliver, poll, operate the outbox, demo.",
    )
    parser.add_argument("--verbose", action="store_true", help="log debug lines to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    p_map = sub.add_parser("map", help="map a referral to the welfare transaction Bundle")
    p_map.add_argument("--format", choices=("json", "xml"), default="json")
    p_map.set_defaults(func=_cmd_map)
    p_val = sub.add_parser("validate", help="run the gates and routing only")
    p_val.set_defaults(func=_cmd_validate)
    for p in (p_map, p_val):
        p.add_argument("input", help="file with FHIR R4 (or STU3) JSON or XML, or - for stdin")
        p.add_argument("--config", type=Path, default=None, help="TOML configuration file")
        p.add_argument(
            "--fhir-version",
            choices=("auto", "4.0", "3.0"),
            default="auto",
            help="FHIR version of the input (auto: STU3 when it holds a ReferralRequest)",
        )
    operator.add_commands(sub)
    store_commands.add_commands(sub)
    report.add_command(sub)
    store.add_commands(sub)
    setup.add_commands(sub)
    account.add_command(sub)
    p_demo = sub.add_parser("demo", help="run the service end to end on loopback")
    p_demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``wor-bridge`` console script."""
    args = build_parser().parse_args(argv)
    quiet = args.command in ("map", "validate")
    level = logging.WARNING if quiet else logging.INFO
    if args.command == "demo":
        level = logging.ERROR  # the demo prints its own summary; --verbose shows the log lines
    logs.configure(logging.DEBUG if args.verbose else level)
    try:
        code: int = args.func(args)
    except ConfigError as err:
        print(f"wor-bridge: configuration error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except StoreError as err:
        print(f"wor-bridge: store error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except OperationError as err:
        print(f"wor-bridge: {err}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as err:
        print(f"wor-bridge: cannot read input ({type(err).__name__})", file=sys.stderr)
        return EXIT_ERROR
    except Exception as err:  # noqa: BLE001 - last resort: no traceback (it may hold input values)
        print(f"wor-bridge: internal error ({type(err).__name__})", file=sys.stderr)
        return EXIT_ERROR
    return code
