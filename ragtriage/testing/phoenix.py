"""Run a throwaway ``phoenix serve`` on free loopback ports (tests and ``ragtriage demo``).

Needs the ``phoenix`` extra (``pip install 'ragtriage[phoenix]'``). The server
gets its own working directory (SQLite inside), no telemetry and no external
downloads; startup takes 15-20 s on two cores, so start one per session.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import httpx

_INHERITED_PREFIXES = ("PHOENIX_", "OTEL_")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PhoenixServer:
    """``with PhoenixServer(workdir) as phoenix: phoenix.url``."""

    def __init__(self, workdir: str | Path, *, port: int | None = None, startup_timeout_s: float = 120.0) -> None:
        self.workdir = Path(workdir)
        self.port = port or _free_port()
        self.grpc_port = _free_port()
        self.startup_timeout_s = startup_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "phoenix.log"

    def start(self) -> PhoenixServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(_INHERITED_PREFIXES)}
        env.update(
            PHOENIX_WORKING_DIR=str(self.workdir),
            PHOENIX_HOST="127.0.0.1",
            PHOENIX_PORT=str(self.port),
            PHOENIX_GRPC_PORT=str(self.grpc_port),
            PHOENIX_TELEMETRY_ENABLED="false",
            PHOENIX_ALLOW_EXTERNAL_RESOURCES="false",
            PHOENIX_DISABLE_AGENT_ASSISTANT="true",
            PHOENIX_LOG_MIGRATIONS="false",
            PYTHONUNBUFFERED="1",
        )
        # This interpreter's Phoenix, the one the phoenix extra installed: the first ``phoenix`` on PATH may be
        # another environment's (a venv run without activating it), or no Phoenix at all.
        if importlib.util.find_spec("phoenix") is not None:  # finds the package without importing it (~7 s)
            command = [sys.executable, "-m", "phoenix.server.main", "serve"]
        elif executable := shutil.which("phoenix"):
            command = [executable, "serve"]
        else:
            raise RuntimeError("phoenix is not installed: pip install 'ragtriage[phoenix]'")
        self._log = self.log_path.open("wb")
        self._proc = subprocess.Popen(
            command, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + self.startup_timeout_s
        with httpx.Client(timeout=2.0) as client:
            while True:
                if self._proc.poll() is not None:
                    tail = self.log_path.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"phoenix serve exited with {self._proc.returncode}:\n{tail}")
                try:
                    if client.get(f"{self.url}/readyz").status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(
                        f"phoenix serve not ready after {self.startup_timeout_s} s (log: {self.log_path})"
                    )
                time.sleep(0.1)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> PhoenixServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
