"""The read path's references: the same bytes served by a bare FastAPI app and by a
frameworkless ASGI app, each with the same uvicorn (uvloop, httptools) and the same
number of workers as the API under test.

They answer any GET with the bytes of BENCH_BODY_FILE, read once at start-up, as
`application/json`; nothing else (no auth, no cache, no Redis). The difference between the
API's cache hit and these is what the API's own work costs.
Run: BENCH_BODY_FILE=body.json PORT=8100 WORKERS=2 .venv/bin/python -m bench.reference_apps asgi
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import Response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _body() -> bytes:
    return Path(os.environ["BENCH_BODY_FILE"]).read_bytes()


def fastapi_app() -> FastAPI:
    """A bare FastAPI app: one route, the bytes from memory."""
    body = _body()
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/{path:path}")
    async def dashboard() -> Response:
        return Response(body, media_type="application/json")

    return app


def asgi_app() -> AsgiApp:
    """A frameworkless ASGI app: the response written straight to uvicorn."""
    body = _body()
    start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
    }
    message = {"type": "http.response.body", "body": body}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start)
        await send(message)

    return app


FACTORIES = {"fastapi": "bench.reference_apps:fastapi_app", "asgi": "bench.reference_apps:asgi_app"}


def main() -> int:
    kind = sys.argv[1]
    uvicorn.run(
        FACTORIES[kind],
        factory=True,
        host="127.0.0.1",
        port=int(os.environ["PORT"]),
        workers=int(os.environ.get("WORKERS", "1")),
        loop="uvloop",
        http="httptools",
        access_log=False,
        lifespan="off",  # nothing to set up
        log_level="warning",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
