"""A pseudo-terminal for CLI tests: what a person at a terminal sees, redraws included.

`Terminal` owns a pty; commands run with it as their stdout (and stdin), and a reader thread
keeps everything they write. `in_background` runs a command as an interactive shell runs
`command &`: the terminal is its controlling terminal, and a shell's process group is in the
foreground while the command's own group is not.
"""

from __future__ import annotations

import contextlib
import os
import pty
import subprocess
import sys
import threading
import time

# A stand-in for an interactive shell: it takes the terminal (its group is the foreground
# one), starts the command in a process group of its own (a background job), and waits.
_SHELL = """
import fcntl, subprocess, sys, termios
fcntl.ioctl(0, termios.TIOCSCTTY, 0)
sys.exit(subprocess.Popen(sys.argv[1:], process_group=0).wait())
"""


class Terminal:
    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        self._out = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # closed, or every writer gone
                return
            if not data:
                return
            with self._lock:
                self._out += data

    def run(self, args: list[str], env: dict, **kwargs) -> subprocess.Popen:
        """`args` with this terminal as stdin and stdout (stderr is piped apart)."""
        return subprocess.Popen(
            args,
            env=env,
            stdin=self.slave,
            stdout=self.slave,
            stderr=subprocess.PIPE,
            start_new_session=True,
            **kwargs,
        )

    def in_background(self, args: list[str], env: dict) -> subprocess.Popen:
        """`args` started as `args &` from an interactive shell on this terminal; the process
        returned is the shell, which waits for it."""
        return subprocess.Popen(
            [sys.executable, "-c", _SHELL, *args],
            env=env,
            stdin=self.slave,
            stdout=self.slave,
            stderr=self.slave,
            start_new_session=True,
        )

    def text(self) -> str:
        with self._lock:
            return self._out.decode(errors="replace")

    def lines(self) -> list[str]:
        """Every line written so far, each as its last redraw left it (no escape codes)."""
        out = []
        for raw in self.text().replace("\r\n", "\n").split("\n"):
            out.append(raw.rsplit("\x1b[2K", 1)[-1].replace("\x1b[1A", "").strip("\r"))
        return out

    def wait_for(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.1)
        return predicate(self)

    def close(self) -> None:
        for fd in (self.slave, self.master):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._reader.join(5)

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
