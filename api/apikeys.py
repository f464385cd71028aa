"""API keys: minting, hashing, and the `api_keys` table (mescache/sql/migrations/003_auth.sql).

A key is a long random token (`mes_` and 43 URL-safe characters, 256 bits) shown once when
it is made. Only its SHA-256 is stored: a key that long needs no slow, salted hash, and a
plain digest lets the API look a key up by an index. The first characters of a key are its
*prefix*, stored in clear to tell keys apart in listings and logs; they are not enough to
guess the rest. Keys are never stored or logged in clear.

Two roles: `operator` (reads everything, changes statuses) and `client` (acts for one
customer, matching `orders.customer`).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, get_args

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from mescache.errors import Fatal
from mescache.queries import query

Role = Literal["operator", "client"]
ROLES: Final[tuple[Role, ...]] = get_args(Role)

KEY_SCHEME: Final = "mes_"
PREFIX_LENGTH: Final = 12  # "mes_" and 8 random characters: 48 bits, enough to tell keys apart
MIN_KEY_LENGTH: Final = 32  # for keys chosen by people (OPERATOR_API_KEY); ours are 47
MAX_KEY_LENGTH: Final = 256  # longer is not a key of ours: refused without a query
ENV_OPERATOR_LABEL: Final = "OPERATOR_API_KEY"
MAX_LABEL_LENGTH: Final = 200  # as api_keys.label's CHECK


class ApiKeyError(Fatal):
    """An API key operation failed."""


class ApiKeyNotFound(ApiKeyError):
    """No API key has this id or prefix."""


class AmbiguousApiKey(ApiKeyError):
    """More than one API key has this prefix: name the key by its id."""


class BadApiKeyRequest(ApiKeyError):
    """The key asked for is not valid (role without customer, or the other way round)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified key speaks for: what the authorisation checks look at."""

    key_id: int
    prefix: str
    role: Role
    customer: str | None  # set exactly for a client

    @property
    def is_operator(self) -> bool:
        """Whether this key may act for every customer (the operator role)."""
        return self.role == "operator"


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """A row of api_keys as the CLI lists it (never the key itself)."""

    id: int
    prefix: str
    role: Role
    customer: str | None
    label: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewApiKey:
    """A key just made: `key` is its only copy in clear."""

    key: str
    info: ApiKeyInfo


def mint_key() -> str:
    """A new random API key, with the scheme's prefix so a leaked one is recognisable."""
    return KEY_SCHEME + secrets.token_urlsafe(32)


def key_hash(key: str) -> bytes:
    """The SHA-256 digest of a key, which is all the database stores."""
    return hashlib.sha256(key.encode("utf-8")).digest()


def key_prefix(key: str) -> str:
    """The key's first characters, stored to tell keys apart in listings."""
    return key[:PREFIX_LENGTH]


def _info(row: dict[str, Any]) -> ApiKeyInfo:
    return ApiKeyInfo(**row)


def check_role(role: str, customer: str | None) -> Role:
    """The role if it goes with `customer` (clients have one, operators none)."""
    if role not in ROLES:
        raise BadApiKeyRequest(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if role == "client" and not customer:
        raise BadApiKeyRequest("a client key needs --customer (the orders' customer name)")
    if role == "operator" and customer is not None:
        raise BadApiKeyRequest("an operator key acts for no customer: drop --customer")
    if customer is not None and len(customer) > 200:
        raise BadApiKeyRequest("customer names are at most 200 characters")
    if customer is not None:
        _check_text(customer, "customer")
    return role


def check_label(label: str) -> str:
    """The label if the api_keys table can hold it."""
    if len(label) > MAX_LABEL_LENGTH:
        raise BadApiKeyRequest(f"labels are at most {MAX_LABEL_LENGTH} characters")
    _check_text(label, "label")
    return label


def _check_text(text: str, what: str) -> None:
    # Text PostgreSQL can store: no NUL, and UTF-8 (argv may carry undecodable bytes).
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadApiKeyRequest(f"the {what} is not valid UTF-8 text") from None
    if "\x00" in text:
        raise BadApiKeyRequest(f"the {what} cannot hold the NUL character")


async def verify(conn: AsyncConnection[Any], digest: bytes) -> Principal | None:
    """The principal of an active key with this SHA-256, or None."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query("api_key_verify"), {"key_hash": digest})
        row = await cur.fetchone()
    if row is None:
        return None
    return Principal(row["id"], row["prefix"], row["role"], row["customer"])


async def create_key(
    conn: AsyncConnection[Any], role: str, customer: str | None = None, label: str = ""
) -> NewApiKey:
    """Store a new key of `role` (a client's names its customer); the key itself is returned once,
    only its hash is kept."""
    checked = check_role(role, customer)
    check_label(label)
    key = mint_key()
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            query("api_key_create"),
            {
                "key_hash": key_hash(key),
                "prefix": key_prefix(key),
                "role": checked,
                "customer": customer,
                "label": label,
            },
        )
        row = await cur.fetchone()
    assert row is not None  # INSERT ... RETURNING always returns the row
    return NewApiKey(key, _info(row))


async def list_keys(conn: AsyncConnection[Any], include_revoked: bool = False) -> list[ApiKeyInfo]:
    """The stored keys in the order they were made; revoked ones only with `include_revoked`."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query("api_key_list"), {"all": include_revoked})
        return [_info(row) for row in await cur.fetchall()]


async def revoke_key(conn: AsyncConnection[Any], ref: str) -> tuple[ApiKeyInfo, bool]:
    """Revoke the key with this id or prefix; returns it and whether it was active."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query("api_key_find"), {"ref": ref})
        found = [_info(row) for row in await cur.fetchall()]
        by_id = [k for k in found if str(k.id) == ref]
        matches = by_id or found
        if not matches:
            raise ApiKeyNotFound(f"no API key with id or prefix {ref!r}")
        if len(matches) > 1:
            ids = ", ".join(str(k.id) for k in matches)
            raise AmbiguousApiKey(f"prefix {ref!r} names keys {ids}: give the id")
        await cur.execute(query("api_key_revoke"), {"id": matches[0].id})
        row = await cur.fetchone()
    return (_info(row), True) if row is not None else (matches[0], False)


async def provision_operator(conn: AsyncConnection[Any], key: str) -> ApiKeyInfo:
    """Make `key` (OPERATOR_API_KEY) an operator key, retiring the one it replaces.

    Idempotent, so every API process may run it at start-up. A key that was revoked
    stays revoked (returned with its `revoked_at`): a restart must not undo a revocation.
    """
    digest = key_hash(key)
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        params = {"key_hash": digest, "prefix": key_prefix(key), "label": ENV_OPERATOR_LABEL}
        await cur.execute(query("api_key_retire_env_operator"), params)
        await cur.execute(query("api_key_provision_env_operator"), params)
        row = await cur.fetchone()
    assert row is not None  # the upsert returns the row either way
    info = _info(row)
    if info.role != "operator":
        raise BadApiKeyRequest("OPERATOR_API_KEY is already a client key: choose another")
    return info
