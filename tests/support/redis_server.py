"""A real Redis for tests and benchmarks: Debian's redis-server (`make redis` installs it),
on a free loopback port, keeping nothing on disk."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.procs import free_port


def redis_binary() -> str | None:
    return shutil.which("redis-server")


class RedisServer:
    def __init__(self, port: int | None = None):
        found = redis_binary()
        if found is None:
            raise FileNotFoundError(
                "no redis-server here: apt-get install redis-server (make redis does it)"
            )
        self.binary = found
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="llmlb-redis-"))
        self.log_path = self.root / "redis.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30) -> RedisServer:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
                "--logfile",
                str(self.log_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            if self.client().ping():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"redis-server not ready after {timeout}s")

    def client(self):
        import redis

        return _Quiet(redis.Redis.from_url(self.url, socket_timeout=2))

    def stop(self, timeout: float = 30) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class _Quiet:
    """A client whose ping says False instead of raising while the server starts."""

    def __init__(self, client):
        self._client = client

    def ping(self) -> bool:
        import redis

        try:
            return bool(self._client.ping())
        except redis.ConnectionError:
            return False

    def __getattr__(self, name):
        return getattr(self._client, name)
