"""The pages: the operator's start page at ``/`` and the client's at ``/client``. Each is
one HTML file, one script and the shared stylesheet, shipped as package data
(``api/page/``) and served as they are; there is no build step.

The pages hold no data and need no key: each asks for one and sends it with every request
it makes to the API. The one thing filled in on the way out is the currency (the
``CURRENCY`` setting) in a ``<meta>`` tag, so it never sits in any cached bytes.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Final

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from api import live, pictures
from api.context import Ctx

PAGE_DIR = Path(__file__).with_name("page")
_CURRENCY_SLOT: Final = "__CURRENCY__"


def _page(name: str, currency: str) -> HTMLResponse:
    html = (PAGE_DIR / name).read_text(encoding="utf-8")
    return HTMLResponse(
        html.replace(_CURRENCY_SLOT, escape(currency)), headers={"Cache-Control": "no-cache"}
    )


def mount(app: FastAPI) -> None:
    """Serve the pages, their assets under ``/page/``, and what keeps them live
    (``/events``, ``/customers/me/events``, ``/stats``) or draws models."""
    app.include_router(live.router)
    app.include_router(live.client_router)
    app.include_router(pictures.router)

    @app.get("/", include_in_schema=False)
    async def dashboard_page(ctx: Ctx) -> HTMLResponse:
        return _page("index.html", ctx.settings.currency)

    @app.get("/client", include_in_schema=False)
    async def client_page(ctx: Ctx) -> HTMLResponse:
        return _page("client.html", ctx.settings.currency)

    app.mount("/page", StaticFiles(directory=PAGE_DIR), name="page")
