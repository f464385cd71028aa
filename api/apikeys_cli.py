"""`orders-api keys`: create, list and revoke API keys (settings: DATABASE_URL only).

    orders-api keys create --role client --customer "Anna K." [--label "web shop"]
    orders-api keys create --role operator --label "front desk"
    orders-api keys list [--all]
    orders-api keys revoke <id or prefix>

`create` prints the new key alone on stdout (so `KEY=$(orders-api keys create ...)` works)
and what it is on stderr; the key is shown this once and stored only as its SHA-256.
Exit codes: 0 success, 1 the database could not be reached or refused, 2 bad usage or
settings (including an unknown or ambiguous key to revoke).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import psycopg
from pydantic import ValidationError

from api import apikeys
from api.apikeys import ROLES, ApiKeyError, ApiKeyInfo
from api.settings import AdminSettings
from mescache.logs import redact
from mescache.settings import describe_settings_error


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `keys` and its commands to the `orders-api` command line."""
    keys = sub.add_parser("keys", help="create, list and revoke API keys")
    cmds = keys.add_subparsers(dest="keys_command", required=True, metavar="KEYS_COMMAND")
    create = cmds.add_parser("create", help="make a key and print it once")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--customer", help="the customer a client key acts for (orders.customer)")
    create.add_argument("--label", default="", help="what the key is for (free text)")
    listing = cmds.add_parser("list", help="the keys (never the keys themselves)")
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    revoke = cmds.add_parser("revoke", help="revoke a key by its id or prefix")
    revoke.add_argument("key", metavar="ID_OR_PREFIX")


def _describe(info: ApiKeyInfo) -> str:
    who = f"client of {info.customer!r}" if info.customer is not None else info.role
    return f"key {info.id} ({info.prefix}..., {who})"


def _table(keys: list[ApiKeyInfo]) -> str:
    head = ("id", "prefix", "role", "customer", "label", "created", "revoked")
    rows = [
        (
            str(k.id),
            k.prefix,
            k.role,
            k.customer or "-",
            k.label or "-",
            f"{k.created_at:%Y-%m-%d %H:%M}",
            f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "-",
        )
        for k in keys
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        for r in [head, *rows]
    )


async def _run(args: argparse.Namespace, settings: AdminSettings) -> int:
    async with await psycopg.AsyncConnection.connect(
        settings.database_url, autocommit=True
    ) as conn:
        if args.keys_command == "create":
            made = await apikeys.create_key(conn, args.role, args.customer, args.label)
            print(made.key)
            print(
                f"created {_describe(made.info)}: this is the only time the key is shown",
                file=sys.stderr,
            )
        elif args.keys_command == "list":
            keys = await apikeys.list_keys(conn, include_revoked=args.all)
            print(_table(keys) if keys else "no keys" + ("" if args.all else " (active)"))
        else:
            info, was_active = await apikeys.revoke_key(conn, args.key)
            if was_active:
                print(
                    f"revoked {_describe(info)}; running API processes refuse it within "
                    "AUTH_CACHE_TTL (10 s by default)"
                )
            else:
                print(f"{_describe(info)} was already revoked at {info.revoked_at}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run a parsed `orders-api keys ...` command."""
    command = f"orders-api keys {args.keys_command}"
    try:
        settings = AdminSettings()  # type: ignore[call-arg]  # values come from the environment
    except ValidationError as exc:
        print(f"{command}: bad settings: {describe_settings_error(exc)}", file=sys.stderr)
        return 2
    try:
        if args.keys_command == "create":
            apikeys.check_role(args.role, args.customer)  # refuse before connecting
            apikeys.check_label(args.label)
        return asyncio.run(_run(args, settings))
    except ApiKeyError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return 2
    except psycopg.errors.UndefinedTable:
        print(
            f"{command}: no api_keys table: apply the migrations "
            "(python -m mescache.migrate DATABASE_URL)",
            file=sys.stderr,
        )
        return 1
    except psycopg.Error as exc:
        print(f"{command}: {redact(' '.join(str(exc).split()))}", file=sys.stderr)
        return 1
