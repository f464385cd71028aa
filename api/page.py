"""The operator's start page at ``/``: one HTML file, one script and one stylesheet,
shipped as package data (``api/page/``) and served as they are; there is no build step.

The page itself holds no data and needs no key: it asks the operator for one and sends it
with every request it makes to the API.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from api import live

PAGE_DIR = Path(__file__).with_name("page")


def mount(app: FastAPI) -> None:
    """Serve the dashboard at ``/``, its assets under ``/page/``, and what keeps it live
    (``/events``, ``/stats``)."""
    app.include_router(live.router)

    @app.get("/", include_in_schema=False)
    async def dashboard_page() -> FileResponse:
        return FileResponse(PAGE_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/page", StaticFiles(directory=PAGE_DIR), name="page")
