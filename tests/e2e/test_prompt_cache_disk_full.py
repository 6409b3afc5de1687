"""A full disk under the prompt cache, for real: the node runs in its own mount namespace
(`unshare`) with $LLMLB_HOME/prompt-cache on a 1 MB tmpfs, which the test fills (through
/proc/<pid>/root, the node's view of the file system). Saving a sequence then fails as it
does on a full disk: the node says so once, and prompts are evaluated as if nothing had been
saved. Skipped where unprivileged user namespaces (or unshare) are not available."""

from __future__ import annotations

import httpx
import pytest

from llmlb.engine.prompt_cache import BLOCK, DIR_NAME
from tests.support.catalog import register_file
from tests.support.tmpfs import TmpfsNode, can_mount_tmpfs, fill

pytestmark = pytest.mark.e2e

if not can_mount_tmpfs():
    pytest.skip("needs unshare and user namespaces to mount a small tmpfs", allow_module_level=True)

FULL = "WARNING llmlb.engine: prompt cache: could not save a sequence: the disk is full"


class CacheOnTmpfs(TmpfsNode):
    """`llmlb node serve` with its prompt cache on a tmpfs of its own."""

    under, size = DIR_NAME, "1m"


def generate(node, text: str) -> int:
    """Prompt tokens evaluated for a raw prompt of `text`."""
    body = {"model": "org/tiny", "prompt": text, "raw": True, "stream": False}
    r = httpx.post(
        node.url + "/api/generate", json={**body, "options": {"num_predict": 2}}, timeout=120
    )
    assert r.status_code == 200, r.text
    return r.json()["prompt_eval_count"]


def restored(node) -> float:
    for line in httpx.get(node.url + "/metrics").text.splitlines():
        if line.startswith('llmlb_prompt_cache_tokens_total{source="restored"}'):
            return float(line.split()[1])
    raise AssertionError("no llmlb_prompt_cache_tokens_total{source=restored}")


def test_a_full_disk_falls_back_to_a_cold_prompt_with_one_warning(tmp_path, tiny_gguf):
    home = tmp_path / "home"
    register_file(home, "org/tiny", tiny_gguf)
    one = "".join(f"first {i}: the quick brown fox jumps over the lazy dog\n" for i in range(10))
    two = "".join(f"second {i}: pack my box with five dozen liquor jugs\n" for i in range(10))
    node = CacheOnTmpfs(home, env={"LLMLB_NUM_PARALLEL": "1"}).start()
    try:
        fill(node.path(f"{DIR_NAME}/filler"), 64 << 10)  # something else takes the whole disk
        cold = generate(node, one)
        generate(node, two)  # takes the only sequence: saving the first fails
        # evaluated again (but for the sequence's first tokens, which the two share)
        assert generate(node, one) > cold - BLOCK
        assert restored(node) == 0
        generate(node, two)  # fails to save again: no second warning
    finally:
        assert node.stop() == 0, node.log()  # and once more while unloading
    log = node.log()
    assert log.count(FULL) == 1, log
    assert "Traceback" not in log
