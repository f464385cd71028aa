"""The API as a real uvicorn process on a free port (streams and shutdown need a server)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
from pydantic import SecretStr

from api.settings import ApiSettings
from devtools.devstack import free_port


class ApiProcess:
    """`orders-api` in a child process; `base_url` answers once /healthz does."""

    def __init__(self, settings: ApiSettings) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CDC_", "TTL_"))}
        for name, value in settings.model_dump().items():
            if value is not None:
                secret = isinstance(value, SecretStr)
                env[name.upper()] = value.get_secret_value() if secret else str(value)
        env.update({"HOST": "127.0.0.1", "PORT": str(self.port)})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "api.main"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=None,  # inherited: pytest shows it when a test fails
        )
        self._wait_healthy()

    def _wait_healthy(self, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"orders-api exited with {self.proc.returncode}")
            try:
                if httpx.get(self.base_url + "/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise AssertionError("orders-api did not answer /healthz in time")

    def stop(self, within: float = 20.0) -> int:
        """SIGTERM, and the exit code; kills it only if it hangs past `within`."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(within)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("orders-api did not stop on SIGTERM") from None
        return self.proc.returncode
