"""``wor-bridge account create|disable|reset|list``: console accounts (README: Browser console).

A password is never an argument (argv is visible to every user of the machine, in ``ps`` and in
shell history): it is read from a prompt without echo when stdin is a terminal, else as the first
line of stdin (``printf '%s\\n' "$PW" | wor-bridge account create ...``; the line end is not part
of it). With ``--totp`` the new TOTP secret and its ``otpauth://`` URI are printed once.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any

import pyotp

from wor_bridge import bootstrap
from wor_bridge.core.account import Account
from wor_bridge.usecases import accounts as uc


def _password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Wachtwoord: ")
        if getpass.getpass("Nogmaals: ") != first:
            raise uc.AccountError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def _shown(account: Account, *, secret: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "username": account.username,
        "role": account.role,
        "organisation": account.organisation,
        "disabled": account.disabled,
        "totp": account.totp_secret is not None,
    }
    if secret and account.totp_secret is not None:
        out["totp_secret"] = account.totp_secret
        out["totp_uri"] = pyotp.TOTP(account.totp_secret).provisioning_uri(
            name=account.username, issuer_name="wor_bridge"
        )
    return out


def cmd_account(args: argparse.Namespace) -> int:
    """Create, disable, reset or list console accounts; 0 done, 1 refused (message on stderr)."""
    c = bootstrap.load(args.config)
    if c.accounts is None:  # pragma: no cover - bootstrap always wires it
        return 1
    try:
        if args.action == "list":
            listed = [_shown(a, secret=False) for a in c.accounts.list_accounts()]
            sys.stdout.write(json.dumps(listed, indent=2) + "\n")
            return 0
        if args.action == "create":
            account = uc.create(
                c.accounts,
                c.store,
                c.clock,
                username=args.username,
                role=args.role,
                organisation=args.organisation,
                password=_password(),
                known_organisations=frozenset(d.id for d in c.config.core.destinations),
                totp=args.totp,
                operator=args.operator,
            )
        elif args.action == "disable":
            uc.disable(c.accounts, c.store, c.clock, args.username, operator=args.operator)
            sys.stdout.write(json.dumps({"username": args.username, "disabled": True}) + "\n")
            return 0
        else:
            totp = True if args.totp else (False if args.no_totp else None)
            account = uc.reset(
                c.accounts,
                c.store,
                c.clock,
                args.username,
                _password(),
                totp=totp,
                operator=args.operator,
            )
    except uc.AccountError as err:
        print(f"wor-bridge: account {args.action} refused: {err}", file=sys.stderr)
        return 1
    sys.stdout.write(json.dumps(_shown(account, secret=True), indent=2) + "\n")
    return 0


def add_command(sub: Any) -> None:
    """Add ``account`` to the CLI's subparsers."""
    p = sub.add_parser("account", help="console accounts (password from a prompt or stdin)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=None, help="TOML configuration file")
    common.add_argument("--operator", default="cli", help="who acts (recorded in the audit)")
    actions = p.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="a new account", parents=[common])
    create.add_argument("username")
    create.add_argument("--role", choices=("operator", "coach"), required=True)
    create.add_argument("--organisation", default=None, help="a coach's destination id")
    create.add_argument("--totp", action="store_true", help="with a TOTP second factor")
    disable = actions.add_parser("disable", help="disable; ends its sessions", parents=[common])
    disable.add_argument("username")
    reset = actions.add_parser("reset", help="new password; enables again", parents=[common])
    reset.add_argument("username")
    group = reset.add_mutually_exclusive_group()
    group.add_argument("--totp", action="store_true", help="a new TOTP secret")
    group.add_argument("--no-totp", action="store_true", help="remove the second factor")
    actions.add_parser("list", help="accounts (no secrets)", parents=[common])
    p.set_defaults(func=cmd_account)
