"""llama.cpp's own log lines: into our log at debug level with LLMLB_DEBUG, otherwise nowhere.

Without this, llama.cpp prints hundreds of lines per model load to stderr, past our log format.
"""

from __future__ import annotations

import ctypes
import logging
import threading

import llama_cpp as lc

from llmlb import settings

log = logging.getLogger("llmlb.llama_cpp")
_lock = threading.Lock()
_partial: list[str] = []
_callback = None  # kept referenced: llama.cpp calls it for the life of the process


def _forward(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
    # llama.cpp sends a line in pieces (level 5 = continue the previous one)
    with _lock:
        _partial.append(text.decode("utf-8", "replace"))
        if not _partial[-1].endswith("\n"):
            return
        line = "".join(_partial).rstrip()
        _partial.clear()
    if line:
        log.debug("%s", line)


def _drop(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
    return None


def install() -> None:
    """Route llama.cpp's (and ggml's) log; idempotent, re-reads LLMLB_DEBUG."""
    global _callback
    debug = settings.debug()
    if debug:  # whatever level the root logger was given later (the web framework sets INFO)
        log.setLevel(logging.DEBUG)
        logging.getLogger("llmlb.engine").setLevel(logging.DEBUG)
    _callback = lc.llama_log_callback(_forward if debug else _drop)
    lc.llama_log_set(_callback, ctypes.c_void_p(0))
