"""What /api/create checks before it claims anything: a refusal stages nothing."""

from __future__ import annotations

import hashlib
import shutil
from collections import namedtuple

import pytest

from llmlb.errors import LlmlbError
from llmlb.jobs.blobs import Blobs
from llmlb.jobs.create_plan import CreateRequest, Planner
from llmlb.store import db
from tests.support import tiny_hf

Usage = namedtuple("Usage", "total used free")


@pytest.fixture
def planner(llmlb_env):
    engine = db.open_node_catalog(llmlb_env / "llmlb.db")
    yield Planner(engine, llmlb_env, Blobs(engine, llmlb_env))
    engine.dispose()


def _upload(llmlb_env, directory) -> dict[str, str]:
    """The checkpoint's files as blobs, the way /api/blobs stores them."""
    (llmlb_env / "blobs").mkdir(parents=True, exist_ok=True)
    files = {}
    for p in sorted(directory.iterdir()):
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        shutil.copyfile(p, llmlb_env / "blobs" / f"sha256-{digest}")
        files[p.name] = digest
    return files


def test_free_space_is_checked_before_a_conversion(planner, llmlb_env, tmp_path, monkeypatch):
    files = _upload(llmlb_env, tiny_hf.make_checkpoint(tmp_path / "ckpt", "qwen2"))
    monkeypatch.setattr("llmlb.jobs.create_plan.shutil.disk_usage", lambda _p: Usage(0, 0, 1000))
    with pytest.raises(LlmlbError) as err:
        planner.plan(CreateRequest(name="full", files=files, quantize="Q8_0"))
    assert err.value.status == 507 and err.value.message.startswith("not enough disk space")
    assert not (llmlb_env / "creating").exists() or not any((llmlb_env / "creating").iterdir())


def test_a_planned_checkpoint_is_staged_as_links_to_its_blobs(planner, llmlb_env, tmp_path):
    files = _upload(llmlb_env, tiny_hf.make_checkpoint(tmp_path / "ckpt", "gemma2"))
    plan = planner.plan(CreateRequest(name="ok", files=files, system="Be brief."))
    staged = plan.staging / "src" / "model.safetensors"
    assert (
        staged.stat().st_ino
        == (llmlb_env / "blobs" / f"sha256-{files['model.safetensors']}").stat().st_ino
    )
    assert plan.checkpoint is not None and plan.fields["system_prompt"] == "Be brief."
    assert sorted(plan.blobs) == sorted(files.values())
