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
ERROR, CONTINUE = 4, 5  # ggml_log_level
_last_error = ""
_in_error = False


def _forward(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
    # llama.cpp sends a line in pieces (level 5 = continue the previous one)
    _note(level, text)
    with _lock:
        _partial.append(text.decode("utf-8", "replace"))
        if not _partial[-1].endswith("\n"):
            return
        line = "".join(_partial).rstrip()
        _partial.clear()
    if line:
        log.debug("%s", line)


def _drop(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
    _note(level, text)


def _note(level: int, text: bytes) -> None:
    """Keep the last error line: the reason a load failed, in llama.cpp's words."""
    global _last_error, _in_error
    if level != CONTINUE:
        _in_error = level == ERROR
        if _in_error:
            _last_error = ""
    if _in_error:
        _last_error = (_last_error + text.decode("utf-8", "replace")).strip()[-500:]


def last_error() -> str:
    return _last_error


def install() -> None:
    """Route llama.cpp's (and ggml's) log; idempotent, re-reads LLMLB_DEBUG."""
    global _callback
    debug = settings.debug()
    if debug:  # whatever level the root logger was given later (the web framework sets INFO)
        log.setLevel(logging.DEBUG)
        logging.getLogger("llmlb.engine").setLevel(logging.DEBUG)
    _callback = lc.llama_log_callback(_forward if debug else _drop)
    lc.llama_log_set(_callback, ctypes.c_void_p(0))
