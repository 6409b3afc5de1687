"""`make serve` as a newcomer runs it: only what the server needs, on the port asked for."""

import shutil
import subprocess

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def planned(*args: str, venv) -> list[str]:
    """The commands `make ARGS` would run for a fresh venv (make -n runs none of them)."""
    r = subprocess.run(
        ["make", "-n", "--no-print-directory", "-C", str(ROOT), *args, f"VENV={venv}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return r.stdout.splitlines()


def test_make_serve_installs_no_test_extras(tmp_path):
    commands = planned("serve", venv=tmp_path / "venv")
    installs = [c for c in commands if "pip install" in c and "--upgrade pip" not in c]
    assert installs == [f"{tmp_path / 'venv'}/bin/python -m pip install -e ."]
    assert commands[-1].split()[-2:] == ["node", "serve"]


def test_make_serve_takes_a_port(tmp_path):
    commands = planned("serve", "PORT=41001", venv=tmp_path / "venv")
    assert commands[-1].split()[-4:] == ["node", "serve", "--port", "41001"]


def test_make_test_targets_install_the_test_extras(tmp_path):
    commands = planned("install", venv=tmp_path / "venv")
    assert any(c.endswith("pip install -e '.[test]'") for c in commands)
