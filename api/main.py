"""`orders-api`: serve the API with uvicorn, settings from the environment."""

from __future__ import annotations

import logging
import sys

import uvicorn
from pydantic import ValidationError

from api.app import create_app
from api.settings import ApiSettings
from mescache.settings import describe_settings_error


def main() -> int:
    try:
        settings = ApiSettings()  # type: ignore[call-arg]  # values come from the environment
    except ValidationError as exc:
        print(f"orders-api: bad settings: {describe_settings_error(exc)}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
