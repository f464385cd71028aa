"""The API fuzzed from its own OpenAPI schema (schemathesis), in-process against the real
test servers: whatever a client sends, no 5xx, and every answer matches the schema."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import positive_data_acceptance

from api.app import create_app
from tests.integration.conftest import OPERATOR_KEY, api_settings

# The schema as the app publishes it; building it needs no server.
schema = schemathesis.openapi.from_dict(
    create_app(api_settings("postgresql://unused", "redis://unused")).openapi()
)


@pytest.fixture
def served(database_url: str, redis_url: str) -> Iterator[FastAPI]:
    """The app on this test's database; schemathesis runs its lifespan on first call."""
    yield create_app(api_settings(database_url, redis_url))
    asgi.shutdown_lifespans()  # closes its pools before the next operation's app


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_operation_answers_within_its_schema(
    case: schemathesis.Case, served: FastAPI
) -> None:
    # A schema-valid order may name a model or material that does not exist: 422 is the
    # right answer there, so "valid data must be accepted" cannot hold for placing orders.
    excluded = [positive_data_acceptance] if case.operation.label == "POST /orders" else []
    # As an operator, so the fuzzing reaches past authentication into every handler.
    case.call_and_validate(
        app=served,
        headers={"Authorization": f"Bearer {OPERATOR_KEY}"},
        excluded_checks=excluded,
    )
