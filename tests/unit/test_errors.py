"""The one error tree: every error of the product stands in one branch, the libraries'
errors are sorted at one place, and the listener's retry follows the tree."""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
from types import SimpleNamespace
from typing import Any, ClassVar

import psycopg
import pytest
from redis import exceptions as redis_errors

import mescache.errors
from cdc_listener import daemon
from cdc_listener.errors import (
    DecodeError,
    ListenerError,
    ProtocolViolation,
    SlotInUse,
    SourceUnavailable,
    StreamEnded,
    StreamRefused,
    StreamSilent,
)
from cdc_listener.metrics import ListenerMetrics
from cdc_listener.settings import ListenerSettings
from mescache.errors import Fatal, MesCacheError, Retryable, is_retryable
from mescache.redisconn import BadRedisUrl
from writer.errors import LockLost, MalformedEntry, NoOutbox, UnknownDeadLetter, WriterError

PACKAGES = ("api", "cdc_listener", "mescache", "writer")
ROOTS = {MesCacheError, Retryable, Fatal, ListenerError, WriterError}


def _every_error() -> set[type[MesCacheError]]:
    for name in PACKAGES:
        package = importlib.import_module(name)
        for module in pkgutil.walk_packages(package.__path__, f"{name}."):
            importlib.import_module(module.name)
    found: set[type[MesCacheError]] = set()
    todo: list[type[MesCacheError]] = [MesCacheError]
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_every_error_of_the_product_stands_in_exactly_one_branch() -> None:
    errors = _every_error()
    assert {StreamSilent, LockLost, BadRedisUrl, UnknownDeadLetter} <= errors
    misplaced = [
        cls.__qualname__
        for cls in errors - ROOTS
        if issubclass(cls, Retryable) == issubclass(cls, Fatal)
    ]
    assert misplaced == []


def test_the_drawn_tree_names_every_error_of_the_errors_modules() -> None:
    drawing = mescache.errors.__doc__ or ""
    named_in_errors_modules = [
        cls for cls in _every_error() if cls.__module__.endswith(".errors") and cls not in ROOTS
    ]
    assert named_in_errors_modules
    missing = [cls.__name__ for cls in named_in_errors_modules if cls.__name__ not in drawing]
    assert missing == []


@pytest.mark.parametrize(
    "error",
    [
        StreamEnded("server closed the stream"),
        StreamSilent("nothing for 10 s"),
        SlotInUse("held"),
        LockLost("gone"),
        psycopg.OperationalError("connection refused"),
        psycopg.errors.QueryCanceled("statement timeout"),
        psycopg.errors.AdminShutdown("terminating connection"),
        redis_errors.ConnectionError("Connection reset by peer"),
        redis_errors.TimeoutError("Timeout reading from socket"),
        redis_errors.ResponseError("READONLY You can't write against a read only replica."),
        redis_errors.SlotNotCoveredError("slot 12 is not covered"),
        ConnectionResetError(104, "reset"),
        TimeoutError(),
        OSError(113, "no route to host"),
    ],
    ids=type,
)
def test_transient_failures_are_retryable(error: BaseException) -> None:
    assert is_retryable(error)


@pytest.mark.parametrize(
    "error",
    [
        DecodeError("short message"),
        ProtocolViolation("row change outside a transaction"),
        StreamRefused("publication does not exist"),
        SourceUnavailable("wal_level is replica"),
        MalformedEntry("no status"),
        NoOutbox("no cache_outbox"),
        BadRedisUrl("bad scheme"),
        mescache.errors.MigrationError("001_schema.sql: syntax error"),
        mescache.errors.RedisNotDurable("appendonly no"),
        psycopg.ProgrammingError("syntax error"),
        psycopg.errors.UndefinedTable("no such table"),
        psycopg.errors.InsufficientPrivilege("permission denied"),
        ValueError("bad"),
        KeyError("x"),
        asyncio.CancelledError(),
    ],
    ids=type,
)
def test_bugs_misconfigurations_and_bad_input_are_fatal(error: BaseException) -> None:
    assert not is_retryable(error)


class _FailingSource:
    """Stands for the logical source: each run fails with the next error, once ready."""

    errors: ClassVar[list[BaseException]] = []
    runs: ClassVar[int] = 0

    def __init__(self, *_: object, **__: object) -> None:
        self.ready = False
        self.walsender = None

    async def run(self, stop: asyncio.Event) -> None:
        type(self).runs += 1
        self.ready = True
        raise self.errors.pop(0)


async def test_the_daemon_retries_what_the_tree_calls_retryable_and_stops_on_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    errors: list[BaseException] = [
        psycopg.OperationalError("connection lost"),
        StreamSilent("nothing for 10 s"),
        DecodeError("unknown message type 'X'"),
    ]

    async def no_pause(stop: asyncio.Event, seconds: float) -> None:
        return None

    monkeypatch.setattr(_FailingSource, "errors", errors)
    monkeypatch.setattr(_FailingSource, "runs", 0)
    monkeypatch.setattr(daemon, "LogicalSource", _FailingSource)
    monkeypatch.setattr(daemon, "_sleep", no_pause)
    settings = ListenerSettings(database_url="postgresql://db/mes", redis_url="redis://r:1/0")
    metrics = ListenerMetrics(settings.cdc_mode, settings.cdc_slot)
    applier: Any = SimpleNamespace(store=None, keys=None)  # the stand-in source needs none
    with pytest.raises(DecodeError):
        await daemon._follow(settings, asyncio.Event(), applier, applier, metrics)
    assert _FailingSource.runs == 3  # two retries, then the fatal error ends it
    assert metrics.reconnects == 2
