"""The API fuzzed from its own OpenAPI schema (schemathesis), in-process against the real
test servers: whatever a client sends, no 5xx, and every answer matches the schema."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
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
