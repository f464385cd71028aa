"""The interactive API docs at ``/docs``: Swagger UI from the pinned `swagger-ui-bundle-v2`
package (its version is in pyproject.toml and in the assets' path), served by the API
itself. Nothing is loaded from a CDN: operators paste their key into this page, so every
script it runs must be one this installation shipped.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]  # no py.typed

from api.page import PAGE_DIR


def mount(app: FastAPI) -> None:
    """Serve the docs page at ``/docs`` and Swagger UI's files under ``/docs/assets/``."""

    @app.get("/docs", include_in_schema=False)
    async def docs_page() -> FileResponse:
        return FileResponse(PAGE_DIR / "docs.html", headers={"Cache-Control": "no-cache"})

    app.mount("/docs/assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")
