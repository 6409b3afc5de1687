"""Removing directories under LLMLB_HOME (store/files.py): nothing half-deleted, no empty
folder left behind, never anything outside the root."""

from __future__ import annotations

from llmlb.store import files


def test_discard_removes_the_directory_and_its_empty_parents_only(tmp_path):
    root = tmp_path / "partial"
    target = root / "acme" / "repo"
    (target / "sub").mkdir(parents=True)
    (target / "sub" / "a.gguf").write_bytes(b"x" * 10)
    (root / "other").mkdir()
    files.discard(target, root)
    assert sorted(p.name for p in root.iterdir()) == ["other"]  # acme/ went, no trash left


def test_sweep_trash_finishes_an_interrupted_removal(tmp_path):
    trash = tmp_path / f"{files.TRASH_PREFIX}0123"
    (trash / "deep").mkdir(parents=True)
    (trash / "deep" / "half.gguf").write_bytes(b"GGUF")
    (tmp_path / "kept").mkdir()
    files.sweep_trash(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["kept"]


def test_prune_empty_stops_at_a_folder_that_holds_something(tmp_path):
    root = tmp_path / "models"
    (root / "acme" / "a" / "empty" / "deeper").mkdir(parents=True)
    (root / "acme" / "b").mkdir()
    (root / "acme" / "b" / "model.gguf").write_bytes(b"GGUF")
    files.prune_empty(root / "acme" / "a", root)
    assert not (root / "acme" / "a").exists() and (root / "acme" / "b" / "model.gguf").exists()
    assert root.exists()


def test_owned_dir_only_when_the_file_lives_inside(tmp_path):
    root = tmp_path / "models"
    (root / "acme" / "a").mkdir(parents=True)
    inside = root / "acme" / "a" / "m.gguf"
    assert files.owned_dir(root, "acme/a", str(inside)) == root / "acme" / "a"
    assert files.owned_dir(root, "acme/a", str(tmp_path / "elsewhere.gguf")) is None
    assert files.owned_dir(root, "../escape", str(inside)) is None
