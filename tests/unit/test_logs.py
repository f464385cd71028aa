"""Log lines: key=value text by default, JSON by setting, stable keys, no passwords."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from mescache.logs import JsonFormatter, TextFormatter, redact


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("postgresql://mes:s3cret@db:5432/mes", "s3cret"),
        ("postgres://mes:p%40ss@db/mes?sslmode=require", "p%40ss"),
        ("postgresql://mes:raw@pass@db/mes", "raw@pass"),
        ("redis://:s3cret@redis:6379/0", "s3cret"),
        ("rediss://default:s3cret@redis:6379/0", "s3cret"),
        ("host=db user=mes password=s3cret dbname=mes", "s3cret"),
        ("host=db password='s3 cret' dbname=mes", "s3 cret"),
        ("postgresql://mes@db/mes?password=s3cret&sslmode=disable", "s3cret"),
        ('{"url": "postgresql://mes:s3cret@db/mes"}', "s3cret"),
    ],
)
def test_redact_masks_the_password_of_every_connection_string(text: str, secret: str) -> None:
    masked = redact(f"could not connect to {text}: refused")
    assert secret not in masked
    assert "***" in masked
    assert masked.startswith("could not connect to ")


def test_redact_leaves_text_without_passwords_alone() -> None:
    for text in (
        "postgresql://mes@db:5432/mes",
        "http://127.0.0.1:8000/orders/1",
        "slot orders_cache confirmed 0/16B3748",
    ):
        assert redact(text) == text


def record(msg: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("connect postgresql://mes:s3cret@db/mes failed")
        except RuntimeError:
            exc_info = sys.exc_info()
    rec = logging.LogRecord("cdc_listener", logging.INFO, __file__, 1, msg, args, exc_info)
    rec.__dict__.update(extra)
    return rec


def test_json_lines_carry_the_stable_keys() -> None:
    line = JsonFormatter().format(
        record("listener ready", slot="orders_cache", lsn="0/16B3748", order_id=7, key="order:{7}")
    )
    out = json.loads(line)
    assert out["event"] == "listener ready"
    assert out["level"] == "info"
    assert out["logger"] == "cdc_listener"
    assert (out["slot"], out["lsn"], out["order_id"], out["key"]) == (
        "orders_cache",
        "0/16B3748",
        7,
        "order:{7}",
    )
    assert out["time"].endswith("Z")


def test_text_lines_are_key_value_and_quote_what_needs_it() -> None:
    line = TextFormatter().format(record("source failed", slot="s", error="a b", retry_in=0.5))
    assert ' event="source failed" slot=s error="a b" retry_in=0.5' in line
    assert line.startswith("time=")
    assert " level=info logger=cdc_listener " in line


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()])
def test_no_password_reaches_a_line_by_message_extra_or_traceback(
    formatter: logging.Formatter,
) -> None:
    rec = record(
        "connecting to %s",
        "postgresql://mes:s3cret@db/mes",
        exc=True,
        error="host=db password=s3cret",
    )
    line = formatter.format(rec)
    assert "s3cret" not in line
    assert "RuntimeError" in line
