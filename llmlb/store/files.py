"""Files under LLMLB_HOME that the catalog's rows point at: sizes and digests of a model's
files, where a model's directory is, and removing directories without leaving empty ones or
half-deleted ones behind (a rename to `.trash-*` first, swept at the next start).

The catalog (catalog.py) keeps only rows; pulls and creations use these too.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import uuid
from pathlib import Path

TRASH_PREFIX = ".trash-"


def size_of(path: Path) -> int:
    """A file's size, or the sum of a directory's files (a Safetensors checkpoint)."""
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def projector_beside(path: Path) -> str | None:
    """A vision projector (`*mmproj*.gguf`) next to a model's file, if there is one."""
    if path.is_dir():
        return None
    found = sorted(
        p for p in path.parent.glob("*.gguf") if "mmproj" in p.name.lower() and p != path
    )
    return str(found[0]) if found else None


def model_dir(models_root: Path, name: str) -> Path | None:
    """The directory that holds a model's files, or None if it would not be inside models_root."""
    root = models_root.resolve()
    candidate = models_root / name
    try:
        resolved = candidate.resolve()
    except OSError:
        return None
    if candidate.is_symlink() or resolved == root or root not in resolved.parents:
        return None
    return candidate


def owned_dir(models_root: Path, name: str, path: str) -> Path | None:
    """The model's directory when its file (`path`) lives inside it: only then may deleting
    the model remove files. A model registered from elsewhere keeps its files."""
    directory = model_dir(models_root, name)
    if directory is None:
        return None
    home, file = directory.resolve(), Path(path).resolve()
    return directory if file == home or home in file.parents else None


def remove_model_files(directory: Path, models_root: Path) -> None:
    """Delete a model's files. A directory that also holds another model's directory
    (`owner/repo` and `owner/repo/Q8_0`) loses only its own files."""
    if not directory.exists():
        return
    nested = [d for d in directory.iterdir() if d.is_dir()]
    if nested:
        for f in directory.iterdir():
            if f.is_file() or f.is_symlink():
                f.unlink()
        return
    discard(directory, models_root)


def discard(directory: Path, root: Path) -> None:
    """Remove a directory inside `root`: renamed first (atomic: its name is free at once, even
    before the bytes go), then deleted, then its empty parents."""
    if not directory.exists():
        return
    trash = root / f"{TRASH_PREFIX}{uuid.uuid4().hex}"
    directory.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)
    prune_empty_parents(directory.parent, root)


def sweep_trash(root: Path) -> None:
    """Finish removals that a crash interrupted (`root/.trash-*`)."""
    for trash in root.glob(f"{TRASH_PREFIX}*"):
        shutil.rmtree(trash, ignore_errors=True)


def prune_empty_parents(directory: Path, root: Path) -> None:
    """Remove `directory` and its parents while they are empty, up to (never) `root`."""
    root = root.resolve()
    while root in directory.resolve().parents:
        if directory.exists():
            try:
                directory.rmdir()
            except OSError:  # not empty: it holds something else
                return
        directory = directory.parent


def prune_empty(directory: Path, root: Path) -> None:
    """Remove empty directories inside `directory` (bottom-up), then `directory` and its empty
    parents up to `root`: a failed or cancelled job leaves no empty folder behind."""
    if directory.is_dir() and not directory.is_symlink():
        for sub in sorted((p for p in directory.rglob("*") if p.is_dir()), reverse=True):
            with contextlib.suppress(OSError):
                sub.rmdir()
    prune_empty_parents(directory, root)
