"""Integration fixtures: the API app running in-process against the real servers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from api.settings import ApiSettings


def api_settings(database_url: str, redis_url: str, **overrides: object) -> ApiSettings:
    return ApiSettings(database_url=database_url, redis_url=redis_url, **overrides)  # type: ignore[arg-type]


@pytest.fixture
async def app(database_url: str, redis_url: str) -> AsyncIterator[FastAPI]:
    application = create_app(api_settings(database_url, redis_url))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        yield http
