"""pyproject lists every package by hand (the migrations live outside llmlb/ in the repo and
inside it in the wheel): a directory that ships but is not listed would be missing from every
install but an editable one."""

import tomllib

from tests.conftest import ROOT


def _shipped_dirs(top: str, package: str) -> set[str]:
    """Every directory under `top` with a file in it or below (bytecode caches aside)."""
    found = set()
    for path in [ROOT / top, *(ROOT / top).rglob("*")]:
        if "__pycache__" in path.parts or not path.is_dir():
            continue
        if any(f.is_file() and "__pycache__" not in f.parts for f in path.rglob("*")):
            found.add(".".join((package, *path.relative_to(ROOT / top).parts)))
    return found


def test_pyproject_lists_every_package_directory():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {"llmlb.migrations": "migrations"}
    expected = _shipped_dirs("llmlb", "llmlb") | _shipped_dirs("migrations", "llmlb.migrations")
    assert set(config["packages"]) == expected
