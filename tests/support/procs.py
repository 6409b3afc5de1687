"""Start real `llmlb` server processes on free loopback ports, and stop them.

The timeouts are margins for a loaded 2-core machine shared by several test runs, not
expectations: every wait returns as soon as its event happens.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.fake_nvml import FakeGpu, server_env

LLMLB = [sys.executable, "-m", "llmlb"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float = 30.0, every: float = 0.1) -> bool:
    """Poll `predicate` until it is true (True) or `timeout` seconds pass (False)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


def metric(url: str, name: str) -> float:
    """One unlabelled value from a server's Prometheus `/metrics`."""
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name} at {url}/metrics")


def run_cli(*args: str, env: dict | None = None, input: str | None = None, timeout: float = 120):
    """Run `llmlb ARGS` as a user would, in a child process."""
    return subprocess.run(
        [*LLMLB, *args],
        env=env or os.environ.copy(),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class ServerProcess:
    """`llmlb node serve` (or `router serve`) in a child process with its log in a file.

    What the server sees of the machine is fixed, so that its output is the same everywhere:
    NVML is a stand-in with `gpus` (default none; None: the real NVML), and a model computes
    with one thread (LLMLB_THREADS=1, unless `env` says otherwise): llama.cpp's threads wait
    for each other by spinning, so on a busy machine two of them on two shared cores run many
    times slower than one. `command` is the `llmlb` to run (default: this checkout's).
    """

    def __init__(
        self,
        home: Path,
        kind: str = "node",
        port: int | None = None,
        extra_args: tuple[str, ...] = (),
        env: dict | None = None,
        cpus: set[int] | None = None,
        gpus: tuple[FakeGpu, ...] | None = (),
        command: list[str] = LLMLB,
        cwd: Path | None = None,
    ):
        self.home = Path(home)
        self.command = command
        self.cwd = cwd
        self.cpus = cpus  # pin the process (all its threads) to these CPUs
        self.kind = kind
        self.port = port or free_port()
        self.extra_args = extra_args
        self.env = {
            **os.environ,
            "LLMLB_THREADS": "1",
            **(server_env(gpus) if gpus is not None else {}),
            **(env or {}),
            "LLMLB_HOME": str(self.home),
            "PYTHONUNBUFFERED": "1",
        }
        self.log_path = self.home.parent / f"{kind}-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client_env(self) -> dict:
        """Environment for CLI commands that should talk to this server."""
        key = "LLMLB_HOST" if self.kind == "node" else "LLMLB_ROUTER"
        return {**self.env, key: self.address}

    def start(self, timeout: float = 60) -> ServerProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                [*self.command, self.kind, "serve", "--port", str(self.port), *self.extra_args],
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=(lambda: os.sched_setaffinity(0, self.cpus)) if self.cpus else None,
            )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except FileNotFoundError:
            return ""

    def signal(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """kill -9, as a crash would."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self, timeout: float = 30) -> int | None:
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
