"""Run a throwaway ``redis-server`` on a free loopback port (tests and benchmarks)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """``with RedisServer() as redis: redis.url``; ``persistent=True`` keeps data across ``stop()``/``start()``
    (an fsync-always append-only file), for restart tests. The port stays the same across restarts.

    ``password`` turns on ``requirepass``; ``tls=(certificate, key)`` (PEM files) makes it speak TLS only,
    and :attr:`url` a ``rediss://`` URL that trusts ``certificate``."""

    def __init__(
        self,
        workdir: str | Path | None = None,
        *,
        persistent: bool = False,
        password: str | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.port = free_port()
        self.persistent = persistent
        self.password = password
        self.tls = tls
        self._tmp = None if workdir is not None else tempfile.TemporaryDirectory(prefix="ragtriage-redis-")
        self.workdir = Path(workdir) if workdir is not None else Path(self._tmp.name)  # type: ignore[union-attr]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        if self.tls is None:
            return f"redis://{auth}127.0.0.1:{self.port}/0"
        return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={quote(str(self.tls[0]))}"

    def __repr__(self) -> str:
        return f"RedisServer(port={self.port}, password={'<set>' if self.password else None}, tls={bool(self.tls)})"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
        persistence = ("--appendonly", "yes", "--appendfsync", "always") if self.persistent else ("--appendonly", "no")
        port: tuple[str, ...] = ("--port", str(self.port))
        if self.tls is not None:
            cert, key = (str(path) for path in self.tls)
            port = ("--port", "0", "--tls-port", str(self.port), "--tls-cert-file", cert, "--tls-key-file", key,
                    "--tls-ca-cert-file", cert, "--tls-auth-clients", "no")  # fmt: skip
        # the password goes in on stdin (a config file read from "-"), never on the command line that ps shows
        quoted = (self.password or "").replace("\\", "\\\\").replace('"', '\\"')
        config = f'requirepass "{quoted}"\n' if self.password else ""
        self.proc = subprocess.Popen(
            [binary, "-", *port, "--bind", "127.0.0.1", "--save", "", "--dir", str(self.workdir), *persistence],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        assert self.proc.stdin is not None
        self.proc.stdin.write(config.encode())
        self.proc.stdin.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with redis.Redis.from_url(self.url, socket_timeout=0.5, socket_connect_timeout=0.2) as client:
                    if client.ping():
                        return self
            except (redis.RedisError, OSError):
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
