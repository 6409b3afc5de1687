"""Safetensors checkpoints (Hugging Face layout) to GGUF, on numpy, safetensors' file format
and the gguf package alone.

llama.cpp's own converter (convert_hf_to_gguf.py) needs torch and transformers, several
hundred megabytes that a node does not otherwise need; the gguf package it is built on ships
the tensor-name maps (gguf.TensorNameMap) and the writer, and the few transforms an
architecture needs (the rotary permutation of Llama's q/k, Gemma's norm offset) are a line
each. Tensors are read in slices and written as they go, so memory stays flat whatever the
checkpoint's size. Run it in a child process (`python -m llmlb.convert`): the node never
converts in its own process.
"""

from __future__ import annotations

from llmlb.errors import BadRequest


class ConvertError(BadRequest):
    """The checkpoint cannot be converted: what is wrong with it, in one line."""


def exit_with_parent() -> None:
    """In a child process of the node: end when the node does (killed -9, it cannot say so),
    rather than go on writing into a staging directory that the next start removes."""
    import os
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()
