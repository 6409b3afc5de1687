"""Put models into a node's catalog the way a finished pull would, for tests."""

from __future__ import annotations

import shutil
from pathlib import Path

from llmlb.store import catalog, db


def register_file(
    home: Path,
    name: str,
    source_file: Path,
    source: str = "HuggingFace",
    format: str = "GGUF",
    **fields,
):
    """Copy `source_file` to LLMLB_HOME/models/<name>/ and register it; returns the Model row."""
    target_dir = Path(home) / "models" / name
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / Path(source_file).name
    shutil.copyfile(source_file, target)
    engine = db.open_node_catalog(Path(home) / "llmlb.db")
    try:
        return catalog.register_model(
            engine, name=name, path=target, format=format, source=source, **fields
        )
    finally:
        engine.dispose()
