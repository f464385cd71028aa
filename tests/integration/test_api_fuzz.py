"""The API fuzzed from its own OpenAPI schema (schemathesis), in-process against the real
test servers: whatever a client sends, no 5xx, and every answer matches the schema."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import CheckFunction
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from api.app import create_app
from tests.conftest import TEMPLATE, Servers
from tests.integration.conftest import OPERATOR_KEY, api_settings


class LateApp:
    """The ASGI app under test, known only once the module's database exists: the schema
    (and every case schemathesis derives from it) is bound to this stand-in instead."""

    def __init__(self) -> None:
        self.app: FastAPI | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert self.app is not None, "the served fixture sets the app"
        await self.app(scope, receive, send)


LATE = LateApp()
SEEN: set[tuple[str, int]] = set()  # (operation, status) pairs the fuzzing produced
# The schema as the app publishes it; building it needs no server.
# /events is a stream that never ends by design (tests/integration/test_live.py covers it).
schema = schemathesis.openapi.from_dict(
    create_app(api_settings("postgresql://unused", "redis://unused")).openapi()
).exclude(path="/events")
schema.app = LATE
schema.config.update(base_url=f"http://{asgi.HOST}")


@pytest.fixture(scope="module", autouse=True)
def served(servers: Servers) -> Iterator[None]:
    """One app for the module on a database of its own (Redis db 0, which no other test
    uses); schemathesis runs its lifespan on the first request."""
    database_url = servers.pg.create_database("fuzz", template=TEMPLATE)
    redis_url = servers.redis.url(0)
    with redis.Redis.from_url(redis_url) as r:
        r.flushdb()
    LATE.app = create_app(api_settings(database_url, redis_url))
    yield
    asgi.shutdown_lifespans()  # closes its pools
    LATE.app = None


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,  # the same cases on every run: CI either passes or names a real fault
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_operation_answers_within_its_schema(case: schemathesis.Case[Any]) -> None:
    # A schema-valid order or price may name a model or material that does not exist, or a
    # size the model's kind cannot take: 422 is the right answer there, so "valid data must
    # be accepted" cannot hold for these two.
    semantic = {"POST /orders", "GET /models/{model_id}/price"}
    # "Schema-violating requests must be rejected" cannot hold either: the API ignores
    # query parameters it does not know (as HTTP APIs do), and this test supplies the
    # Authorization header a negative case may have dropped. Malformed values of known
    # parameters are answered 422 and tested in test_api.py.
    excluded: list[CheckFunction] = [negative_data_rejection]
    if case.operation.label in semantic:
        excluded.append(positive_data_acceptance)
    # As an operator, so the fuzzing reaches past authentication into every handler.
    headers = {"Authorization": f"Bearer {OPERATOR_KEY}"}
    response = case.call(headers=headers)
    SEEN.add((case.operation.label, response.status_code))
    case.validate_response(response, headers=headers, excluded_checks=excluded)


def test_the_fuzzing_reached_past_authentication() -> None:
    """Runs after the fuzzing: the operator key opened every handler."""
    succeeded = {label for label, status in SEEN if status < 300}
    assert {"GET /orders/dashboard", "GET /orders", "POST /orders"} <= succeeded, SEEN


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


# Text with what well-behaved clients never send: lone surrogates, NUL, control characters.
HOSTILE_TEXT = st.text(st.characters(exclude_categories=()), max_size=12)
# Deeper than the client side can serialise is covered in test_hostile_input.py.
DEEP = st.integers(min_value=1, max_value=200).map(_nested)
HOSTILE_VALUES = st.one_of(
    HOSTILE_TEXT,
    DEEP,
    st.sampled_from(["1e1000000", "1e-1000000", "-0", "1E+2", "17.00000"]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**70), max_value=2**70),
)
OPERATOR = {"Authorization": f"Bearer {OPERATOR_KEY}"}


@given(customer=HOSTILE_TEXT, name=HOSTILE_TEXT, value=HOSTILE_VALUES, size=HOSTILE_VALUES)
@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_hostile_orders_are_answered_with_a_4xx_or_placed(
    customer: str, name: str, value: object, size: object
) -> None:
    body: dict[str, Any] = {"customer": customer or "x", "model_id": 1, "material_id": 1}
    body["params"] = {name: value, "size": size}
    case = schema["/orders"]["POST"].Case(body=body, media_type="application/json")
    response = case.call(headers=OPERATOR)
    assert response.status_code in (201, 400, 413, 422), response.text
    assert response.json()["detail" if response.status_code >= 400 else "id"]


@given(size=st.one_of(HOSTILE_TEXT, st.sampled_from(["1e1000000", "1e-1000000", "NaN", "-0"])))
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_hostile_price_sizes_are_answered_with_a_4xx_or_a_price(size: str) -> None:
    case = schema["/models/{model_id}/price"]["GET"].Case(
        path_parameters={"model_id": 1}, query={"material": 1, "size": size}
    )
    response = case.call(headers=OPERATOR)
    assert response.status_code in (200, 404, 422), response.text
