"""What this node's prompt cache holds, named by text-prefix hashes, for the router.

Runners tell it (wire.Holds) what each of their sequences holds and which files their disk
tier has (engine/llama_kv.py); at start-up the node reads the headers of the files already
on disk, so that a node that restarted still draws its conversations back before their model
is loaded. The heartbeat carries `summary()`: the sequences' hashes first, then the files'
(the newest first), at most prefix.MAX_HELD of them.
"""

from __future__ import annotations

import logging
from pathlib import Path

from llmlb import prefix
from llmlb.engine import wire
from llmlb.engine.prompt_cache import DIR_NAME, Damaged, scan_dir

log = logging.getLogger("llmlb.engine")


class Holdings:
    def __init__(self) -> None:
        self.seqs: dict[tuple[int, int], list[int]] = {}  # (runner pid, sequence) -> hashes
        self.disk: dict[str, list[int]] = {}  # "<model id>/<key>" -> hashes; newest last

    def apply(self, runner: int, event: wire.Holds) -> None:
        if event.seq >= 0:
            key = (runner, event.seq)
            if event.prefix:
                self.seqs[key] = event.prefix
            else:
                self.seqs.pop(key, None)
        elif event.entry:
            self.disk.pop(event.entry, None)
            if event.prefix:
                self.disk[event.entry] = event.prefix

    def forget_runner(self, runner: int) -> None:
        """A runner ended: its sequences hold nothing; its files stay."""
        for key in [k for k in self.seqs if k[0] == runner]:
            del self.seqs[key]

    def add_saved(self, found: list[tuple[str, list[int]]]) -> None:
        """Files found on disk at start-up (saved_on_disk), oldest first."""
        for name, hashes in found:
            self.disk.setdefault(name, hashes)

    def summary(self, limit: int = prefix.MAX_HELD) -> bytes:
        """Packed hashes (llmlb/prefix.pack) for the heartbeat."""
        seen: dict[int, None] = {}
        for hashes in [*self.seqs.values(), *reversed(self.disk.values())]:
            for h in hashes:
                if len(seen) >= limit:
                    return prefix.pack(seen)
                seen.setdefault(h, None)
        return prefix.pack(seen)


def saved_on_disk(home: Path) -> list[tuple[str, list[int]]]:
    """(name, hashes) of every file of the prompt cache, the least recently used first
    (blocking: run it off the event loop)."""
    root = home / DIR_NAME
    try:
        dirs = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:
        return []
    found: list[tuple[float, str, list[int]]] = []
    for directory in dirs:
        for path, header in scan_dir(directory):
            if isinstance(header, Damaged) or not header.prefix:
                continue  # (its model's runner says so, and removes it, when it loads)
            try:
                mtime = path.stat().st_mtime
            except OSError:
                continue
            found.append((mtime, f"{directory.name}/{path.stem}", header.prefix))
    if found:
        log.info("prompt cache: %d saved prompts on disk (%s)", len(found), root)
    return [(name, hashes) for _, name, hashes in sorted(found)]
