"""llmlb as a user gets it: the wheel built from this checkout, installed into a fresh venv
outside the checkout, run from there with a fresh LLMLB_HOME.

The venv reaches the dependencies already installed in the test's own environment through a
.pth file instead of downloading them again, so this stays fast and works offline; llmlb itself
comes only from the wheel (the checkout is neither on the path nor the working directory).
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from llmlb.store import schema
from tests.conftest import ROOT
from tests.support.procs import ServerProcess

VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
# what the source tree's models declare: the wheel's migrations must create exactly these
NODE_TABLES = {"alembic_version"} | {t.name for t in schema.tables(schema.NODE)}
ROUTER_TABLES = {"alembic_version"} | {t.name for t in schema.tables(schema.ROUTER)}


@dataclass
class Install:
    wheel: Path
    venv: Path
    workdir: Path  # outside the checkout: the commands run here

    @property
    def llmlb(self) -> str:
        return str(self.venv / "bin" / "llmlb")

    def env(self, home: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        return {**env, "LLMLB_HOME": str(home), "PYTHONUNBUFFERED": "1"}

    def run(self, *args: str, home: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.llmlb, *args],
            env=self.env(home),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def server(self, kind: str, home: Path) -> ServerProcess:
        """`llmlb <kind> serve` of the installed wheel, with the real NVML."""
        server = ServerProcess(home, kind=kind, command=[self.llmlb], cwd=self.workdir, gpus=None)
        server.env = self.env(home)
        return server


def _run(*cmd: str | Path) -> str:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{cmd}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Install:
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"  # a copy: building in the checkout would leave build/ behind
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("llmlb", "migrations"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    py = sys.executable
    _run(py, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", base / "dist", src)  # fmt: skip
    [wheel] = (base / "dist").glob("llmlb-*.whl")
    venv = base / "venv"
    _run(py, "-m", "venv", "--without-pip", venv)
    purelib = _run(
        venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"
    )
    deps = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (Path(purelib.strip()) / "llmlb-test-deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    _run(py, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps",
         "--no-index", "-q", wheel)  # fmt: skip
    workdir = base / "work"
    workdir.mkdir()
    return Install(wheel=wheel, venv=venv, workdir=workdir)


def test_the_wheel_carries_the_migrations_and_the_dashboard(installed):
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    for chain in schema.SCHEMAS:
        assert f"llmlb/migrations/{chain}/env.py" in names
        assert f"llmlb/migrations/{chain}/script.py.mako" in names
    assert "llmlb/migrations/node/versions/0001_initial_schema.py" in names
    assert "llmlb/migrations/router/versions/0002_router_tables.py" in names
    assert "llmlb/server/static/dashboard.html" in names
    assert {n.split("/")[0] for n in names} == {"llmlb", f"llmlb-{VERSION}.dist-info"}


def test_llmlb_runs_from_the_installed_wheel(installed, tmp_path):
    r = installed.run("--version", home=tmp_path / "home")
    assert (r.returncode, r.stdout) == (0, f"llmlb {VERSION}\n"), r.stderr
    where = subprocess.run(
        [installed.venv / "bin" / "python", "-c", "import llmlb; print(llmlb.__file__)"],
        env=installed.env(tmp_path / "home"),
        cwd=installed.workdir,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert Path(where.strip()).is_relative_to(installed.venv)


def test_db_upgrade_from_the_wheel(installed, tmp_path):
    home = tmp_path / "home"
    r = installed.run("db", "upgrade", home=home)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"node catalog {home / 'llmlb.db'} is at revision 0006\n"
    r = installed.run("db", "upgrade", "--router", home=home)
    assert r.returncode == 0, r.stderr
    assert _tables(home / "llmlb.db") == NODE_TABLES
    assert _tables(home / "router.db") == ROUTER_TABLES


def test_node_serve_from_the_wheel(installed, tmp_path):
    home = tmp_path / "home"
    server = installed.server("node", home).start()
    try:
        r = httpx.get(server.url + "/api/version", timeout=30)
        assert (r.status_code, r.json()) == (200, {"version": VERSION})
    finally:
        server.signal(signal.SIGINT)
        assert server.wait() == 0, server.log()
    assert "Traceback" not in server.log()
    assert _tables(home / "llmlb.db") == NODE_TABLES


def test_router_serve_from_the_wheel(installed, tmp_path):
    home = tmp_path / "home"
    server = installed.server("router", home).start()
    try:
        r = httpx.get(server.url + "/dashboard", timeout=30)
        assert r.status_code == 200 and "<html" in r.text.lower()
        status = httpx.get(server.url + "/admin/cluster/status", timeout=30)
        assert status.status_code == 200 and status.json()["nodes_online"] == 0
    finally:
        server.signal(signal.SIGINT)
        assert server.wait() == 0, server.log()
    assert "Traceback" not in server.log()
    assert _tables(home / "router.db") == ROUTER_TABLES
