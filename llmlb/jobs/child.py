"""Native and numeric work in a child process (`python -m MODULE ...`): its JSON lines are
its progress, its last stderr line says why it failed, and a cancel kills it. A crash or an
abort there is a one-line error here, never the node's end."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import Any

from llmlb.errors import BadRequest, LlmlbError


class Cancelled(LlmlbError):
    """The client went away: the work stopped and nothing was kept."""

    status = 499


def run_child(
    args: list[str],
    cancel: threading.Event,
    on_item: Callable[[dict[str, Any]], None] | None,
    what: str,
) -> dict[str, Any]:
    """Run `python -m ARGS`: its JSON lines go to `on_item`; the last one is returned. A
    failure raises its one-line reason; `cancel` kills it."""
    last: dict[str, Any] = {}
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
        watcher = threading.Thread(target=_kill_on, args=(cancel, proc), daemon=True)
        watcher.start()
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                try:
                    item = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(item, dict):
                    last = item
                    if on_item is not None:
                        on_item(item)
            code = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if cancel.is_set():
            raise Cancelled("the client disconnected; nothing was created")
        if code != 0:
            err.seek(0)
            lines = [
                ln.strip()
                for ln in err.read().decode("utf-8", "replace").splitlines()
                if ln.strip()
            ]
            if code < 0:
                raise LlmlbError(
                    f"{what} was stopped ({signal.Signals(-code).name}); nothing was created, run create again"
                )
            reason = lines[-1] if lines else f"exit status {code}"
            raise _error(reason, what)
    return last


def _error(reason: str, what: str) -> LlmlbError:
    if what == "the conversion" or what == "loading the model":
        return BadRequest(
            reason if what == "the conversion" else f"the model cannot be loaded: {reason}"
        )
    return LlmlbError(f"{what} failed: {reason}")


def _kill_on(cancel: threading.Event, proc: subprocess.Popen) -> None:
    while proc.poll() is None:
        if cancel.wait(0.2):
            proc.kill()
            return
