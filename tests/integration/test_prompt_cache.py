"""The prompt cache's files (engine/prompt_cache.py), on a real file system, without a model:
found again by their tokens after a restart, written so that a writer killed mid-write leaves
nothing trusted, bounded by LRU, and dropped with one warning when damaged or foreign."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

from llmlb.engine.prompt_cache import BLOCK, PromptCache, block_keys
from tests.support.procs import wait_for

ID_A, ID_B = "a" * 64, "b" * 64


def cells(n: int, seed: int = 1) -> bytes:
    return bytes((i * seed) % 251 for i in range(n))


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_an_entry_is_found_again_by_its_tokens_after_a_restart(tmp_path):
    tokens = list(range(1000, 1500))
    first = PromptCache(tmp_path, ID_A, 1 << 30)
    assert first.write(tokens, [7, 8], cells(4096))
    again = PromptCache(tmp_path, ID_A, 1 << 30)
    found = again.scan()
    assert [e.tokens for e in found] == [tokens]
    entry = again.lookup(tokens[:300] + [1, 2, 3] * 100)
    assert entry is not None and entry.prefix == [7, 8]
    assert again.read(entry) == cells(4096)
    assert again.lookup([5] * 500) is None  # nothing starts that way
    assert again.lookup(tokens[: BLOCK - 1]) is None  # less than a block names nothing


def test_the_entry_sharing_the_most_blocks_is_found(tmp_path):
    cache = PromptCache(tmp_path, ID_A, 1 << 30)
    common = list(range(2 * BLOCK))
    cache.write(common + [1] * (3 * BLOCK), [], cells(10))
    cache.write(common + [2] * (3 * BLOCK), [], cells(10))
    wanted = common + [2] * (2 * BLOCK) + [3] * BLOCK
    entry = cache.lookup(wanted)
    assert entry is not None and entry.tokens[2 * BLOCK] == 2


def test_a_writer_killed_mid_write_leaves_nothing_that_is_trusted(tmp_path):
    """A child writes an entry and is killed (-9) once its bytes are out but before the
    rename: its fsync never returns."""
    script = textwrap.dedent(
        f"""
        import os, time
        from pathlib import Path
        from llmlb.engine.prompt_cache import PromptCache
        os.fsync = lambda fd: time.sleep(3600)
        PromptCache(Path({str(tmp_path)!r}), {ID_A!r}, 1 << 30).write(list(range(512)), [], b"x" * 100000)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script])
    cache_dir = tmp_path / ID_A[:32]
    try:
        assert wait_for(lambda: any(cache_dir.glob(".*.tmp")), timeout=60)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    cache = PromptCache(tmp_path, ID_A, 1 << 30)
    assert cache.scan() == []
    assert cache.lookup(list(range(512))) is None
    assert list(cache_dir.iterdir()) == []  # the temporary file went too


def test_past_the_limit_the_least_recently_used_files_go_whatever_their_model(tmp_path):
    size = 20_000
    a = PromptCache(tmp_path, ID_A, int(2.5 * size))
    b = PromptCache(tmp_path, ID_B, int(2.5 * size))
    old, older = list(range(300)), list(range(300, 600))
    a.write(old, [], cells(size))
    b.write(older, [], cells(size))
    past = time.time() - 60
    os.utime(a.entries[block_keys(old)[-1]].path, (past, past))
    os.utime(b.entries[block_keys(older)[-1]].path, (past - 10, past - 10))
    a.read(a.entries[block_keys(old)[-1]])  # used again: now the most recent
    a.write(list(range(600, 900)), [], cells(size))
    assert {p.parent.name for p in tmp_path.glob("*/*.kv")} == {ID_A[:32]}
    assert len(list(tmp_path.glob("*/*.kv"))) == 2


def test_a_damaged_file_is_dropped_with_one_warning(tmp_path, caplog):
    cache = PromptCache(tmp_path, ID_A, 1 << 30)
    tokens = list(range(400))
    cache.write(tokens, [], cells(50_000))
    path = next(tmp_path.glob("*/*.kv"))
    data = bytearray(path.read_bytes())
    data[-1000] ^= 0xFF
    path.write_bytes(bytes(data))
    entry = cache.lookup(tokens)
    assert entry is not None
    with caplog.at_level(logging.WARNING, "llmlb.engine"):
        assert cache.read(entry) is None
    assert warnings(caplog) == [
        f"prompt cache: removed {path}: its checksum does not match: it is damaged"
    ]
    assert not path.exists() and cache.lookup(tokens) is None


def test_a_broken_header_and_a_foreign_file_are_dropped_when_found(tmp_path, caplog):
    a = PromptCache(tmp_path, ID_A, 1 << 30)
    a.write(list(range(300)), [], cells(1000))
    a.write(list(range(300, 600)), [], cells(1000))
    first, second = sorted(tmp_path.glob("*/*.kv"))
    raw = bytearray(first.read_bytes())
    raw[20] ^= 0xFF  # inside the header
    first.write_bytes(bytes(raw))
    foreign = tmp_path / ID_B[:32] / second.name
    foreign.parent.mkdir()
    second.rename(foreign)  # a file of model A, put among model B's
    with caplog.at_level(logging.WARNING, "llmlb.engine"):
        assert PromptCache(tmp_path, ID_A, 1 << 30).scan() == []
        assert PromptCache(tmp_path, ID_B, 1 << 30).scan() == []
    assert warnings(caplog) == [
        f"prompt cache: removed {first}: its header's checksum does not match",
        f"prompt cache: removed {foreign}: it was saved for another model",
    ]
    assert list(tmp_path.glob("*/*")) == []


def test_a_node_that_starts_knows_what_its_files_hold_before_any_model_loads(tmp_path):
    from llmlb.engine.holdings import saved_on_disk
    from llmlb.engine.prompt_cache import DIR_NAME

    root = tmp_path / DIR_NAME
    PromptCache(root, ID_A, 1 << 30).write(list(range(300)), [11, 12], cells(100))
    PromptCache(root, ID_B, 1 << 30).write(list(range(300)), [21], cells(100))
    (root / ID_B[:32] / "junk.kv").write_bytes(b"not an entry")
    found = dict(saved_on_disk(tmp_path))
    assert sorted(found.values()) == [[11, 12], [21]]  # the junk is skipped (its runner drops it)
