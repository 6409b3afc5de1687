"""A llama_batch whose arrays numpy owns, and a stop flag llama.cpp can read without Python.

llama_batch_init allocates one seq_id array per row, which Python can only fill row by row;
here every row's seq_id points into one numpy array, so a whole prompt chunk is written with
a few slice assignments.
"""

from __future__ import annotations

import ctypes
import logging

import llama_cpp as lc
import numpy as np

log = logging.getLogger("llmlb.engine")


class Batch:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self.n = 0
        self.token = np.zeros(capacity, dtype=np.int32)
        self.pos = np.zeros(capacity, dtype=np.int32)
        self.n_seq_id = np.ones(capacity, dtype=np.int32)
        self.seq = np.zeros(capacity, dtype=np.int32)
        self.logits = np.zeros(capacity, dtype=np.int8)
        row = ctypes.POINTER(lc.llama_seq_id)
        base = self.seq.ctypes.data
        self._rows = (row * capacity)(*(ctypes.cast(base + 4 * i, row) for i in range(capacity)))
        self.struct = lc.llama_batch(
            n_tokens=0,
            token=self.token.ctypes.data_as(ctypes.POINTER(lc.llama_token)),
            embd=None,
            pos=self.pos.ctypes.data_as(ctypes.POINTER(lc.llama_pos)),
            n_seq_id=self.n_seq_id.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)),
            seq_id=ctypes.cast(self._rows, ctypes.POINTER(row)),
            logits=self.logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
        )

    def clear(self) -> None:
        self.n = 0

    @property
    def room(self) -> int:
        return self.capacity - self.n

    def add(
        self, seq_id: int, tokens: list[int], pos0: int, logits_last: bool, all_out: bool = False
    ) -> int:
        """Append `tokens` of one sequence from position pos0; return the last row. The last
        row gets an output (logits) if asked, or every row (embeddings: all_out)."""
        a, b = self.n, self.n + len(tokens)
        self.token[a:b] = tokens
        self.pos[a:b] = np.arange(pos0, pos0 + len(tokens), dtype=np.int32)
        self.seq[a:b] = seq_id
        self.logits[a:b] = 1 if all_out else 0
        if logits_last:
            self.logits[b - 1] = 1
        self.n = b
        return b - 1

    def decode(self, ctx) -> int:
        self.struct.n_tokens = self.n
        return int(lc.llama_decode(ctx, self.struct))


class AbortFlag:
    """A byte llama.cpp polls between graph nodes (llama_set_abort_callback) to stop a decode.

    The callback must not be Python: it runs on ggml's compute thread between every two
    nodes, and taking the GIL there would stall the decode behind the event loop. libc's
    strlen on a one-byte string is a C function that answers exactly "is the byte set".
    """

    def __init__(self) -> None:
        self._buf = ctypes.create_string_buffer(2)
        self._callback = None
        try:
            address = ctypes.cast(ctypes.CDLL(None).strlen, ctypes.c_void_p).value
            if address:
                self._callback = lc.ggml_abort_callback(address)
        except (OSError, AttributeError, TypeError) as exc:
            log.debug("no native abort callback (%s): decodes stop between chunks only", exc)

    def attach(self, ctx) -> None:
        if self._callback is not None:
            lc.llama_set_abort_callback(
                ctx, self._callback, ctypes.cast(self._buf, ctypes.c_void_p)
            )

    def detach(self, ctx) -> None:
        if self._callback is not None:
            lc.llama_set_abort_callback(ctx, lc.ggml_abort_callback(0), None)

    def set(self) -> None:
        self._buf[0] = b"\x01"

    def clear(self) -> None:
        self._buf[0] = b"\x00"
