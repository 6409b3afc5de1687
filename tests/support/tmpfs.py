"""A node server with one of its directories on a small tmpfs of its own, for real full-disk
cases: the server runs in its own user and mount namespace (`unshare -rm`, no root needed),
and a test fills the tmpfs through /proc/<pid>/root, the server's view of the file system.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.procs import LLMLB, ServerProcess


def can_mount_tmpfs() -> bool:
    if not sys.platform.startswith("linux") or not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
        capture_output=True,
    )
    return probe.returncode == 0


class TmpfsNode(ServerProcess):
    """`llmlb node serve` with `LLMLB_HOME/<under>` (the home itself by default) on a tmpfs of
    `size` (`48m`)."""

    under = ""
    size = "48m"

    def start(self, timeout: float = 60) -> TmpfsNode:
        mount = self.home / self.under
        mount.mkdir(parents=True, exist_ok=True)
        script = f'mount -t tmpfs -o size={self.size} tmpfs "{mount}" && exec "$@"'
        serve = [*LLMLB, "node", "serve", "--port", str(self.port)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                ["unshare", "-rm", "sh", "-c", script, "sh", *serve],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_ready(timeout)
        return self

    def path(self, relative: str) -> Path:
        """A path inside the server's LLMLB_HOME, as the server sees it."""
        assert self.proc is not None
        return Path(f"/proc/{self.proc.pid}/root") / str(self.home).lstrip("/") / relative


def fill(path: Path, block: int = 1 << 20) -> None:
    """Write zeros until the file system says it is full."""
    zeros = bytes(block)
    with open(path, "wb", buffering=0) as fh, contextlib.suppress(OSError):
        while True:
            fh.write(zeros)
