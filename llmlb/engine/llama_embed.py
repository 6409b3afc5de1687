"""Embeddings: several inputs per decode, one sequence each, pooled by llama.cpp.

A context of its own (embeddings on, one shared KV pool of LLMLB_CONTEXT_LENGTH tokens).
Inputs are packed into as few decodes as the pool allows (at most EMBED_SEQS per decode); a
whole input always lies in one compute graph, which encoder models (BERT) need. A model that
declares no pooling of its own is mean-pooled over its tokens; every vector comes back with
unit length, as ollama returns them. A request whose client left stops between two decodes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import llama_cpp as lc
import numpy as np

from llmlb.engine.llama_batch import Batch
from llmlb.engine.llama_cpp import LoadedModel, apply_adapters, new_context
from llmlb.engine.memory import context_for, shape_of
from llmlb.errors import BadRequest, LlmlbError
from llmlb.store.models import Model

log = logging.getLogger("llmlb.engine")
EMBED_SEQS = 16


class Cancelled(LlmlbError):
    """The request was cancelled between two decodes."""


class LlamaEmbedder:
    parallel = 1  # one request at a time; its inputs are batched

    def __init__(self, model: Model, n_ctx: int, progress: Callable[[float], None] | None = None):
        self.name = model.name
        self.n_ctx = context_for(model, n_ctx)
        self.weights = LoadedModel(model, progress)
        self.gpu = self.weights.gpu
        arch = self.weights.meta("general.architecture") or ""
        declared = self.weights.meta(f"{arch}.pooling_type")
        pooling = (
            lc.LLAMA_POOLING_TYPE_UNSPECIFIED
            if declared not in (None, "0")
            else lc.LLAMA_POOLING_TYPE_MEAN
        )
        self.ctx = new_context(
            self.weights, self.n_ctx, EMBED_SEQS, self.n_ctx, self.n_ctx, True, pooling
        )
        if not self.ctx:
            self.weights.close()
            raise LlmlbError(f"no memory for an embedding context of {self.n_ctx} tokens")
        try:
            apply_adapters(self.weights, self.ctx, model)
        except LlmlbError:
            self.close()
            raise
        self.n_embd = lc.llama_model_n_embd(self.weights.ptr)
        self.mem = lc.llama_get_memory(self.ctx)
        self.batch = Batch(self.n_ctx)
        self.lock = threading.Lock()
        self.processor = "100% GPU" if self.gpu else "100% CPU"
        shape = shape_of(model.path)
        self.size_bytes = int(model.size_bytes) + (shape.kv_bytes(self.n_ctx) if shape else 0)

    def _tokens(self, text: str | list[int], index: int) -> list[int]:
        if isinstance(text, list):  # token ids, as OpenAI's API allows
            n_vocab = lc.llama_vocab_n_tokens(self.weights.vocab)
            if any(not 0 <= t < n_vocab for t in text):
                raise BadRequest(
                    f"input {index} holds a token id outside the vocabulary (0-{n_vocab - 1})"
                )
            if len(text) > self.n_ctx:
                raise BadRequest(
                    f"input {index} is longer than the context window of '{self.name}' "
                    f"({self.n_ctx} tokens, LLMLB_CONTEXT_LENGTH)"
                )
            return list(text)
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BadRequest(
                f"input {index} is not valid text (it holds a lone surrogate)"
            ) from exc
        too_long = BadRequest(
            f"input {index} is longer than the context window of '{self.name}' "
            f"({self.n_ctx} tokens, LLMLB_CONTEXT_LENGTH)"
        )
        if len(raw) > self.n_ctx * self.weights.max_piece:
            raise too_long
        tokens = self.weights.tokenize(raw, self.weights.add_bos)
        if len(tokens) > self.n_ctx:
            raise too_long
        if not tokens:
            raise BadRequest(f"input {index} is empty")
        return tokens

    def embed(
        self,
        inputs: list[str | list[int]],
        cancelled: threading.Event | None = None,
        alive: Callable[[], None] | None = None,
    ) -> tuple[list[list[float]], int]:
        """Unit vectors for `inputs`, and how many tokens they had (blocking). Stops with
        Cancelled when `cancelled` is set; calls `alive()` after each decode."""
        tokenized = [self._tokens(text, i) for i, text in enumerate(inputs)]
        groups: list[list[list[int]]] = [[]]
        for tokens in tokenized:
            group = groups[-1]
            if group and (
                len(group) == EMBED_SEQS or sum(map(len, group)) + len(tokens) > self.n_ctx
            ):
                groups.append([])
            groups[-1].append(tokens)
        vectors: list[list[float]] = []
        with self.lock:
            for group in groups:
                if cancelled is not None and cancelled.is_set():
                    raise Cancelled("the embedding request was cancelled")
                vectors += self._decode(group)
                if alive is not None:
                    alive()
        return vectors, sum(map(len, tokenized))

    def _decode(self, group: list[list[int]]) -> list[list[float]]:
        if self.mem:
            lc.llama_memory_clear(self.mem, True)
        self.batch.clear()
        for seq, tokens in enumerate(group):
            self.batch.add(seq, tokens, 0, True, all_out=True)
        rc = self.batch.decode(self.ctx)
        if rc != 0:
            raise LlmlbError(f"llama.cpp could not compute embeddings (code {rc})")
        out = []
        for seq in range(len(group)):
            ptr = lc.llama_get_embeddings_seq(self.ctx, seq)
            if not ptr:
                raise LlmlbError("llama.cpp returned no embedding")
            vec = np.ctypeslib.as_array(ptr, shape=(self.n_embd,)).astype(np.float32)
            norm = float(np.linalg.norm(vec))
            out.append((vec / norm if norm else vec).tolist())
        return out

    def close(self) -> None:
        if getattr(self, "ctx", None):
            lc.llama_free(self.ctx)
            self.ctx = None
        self.weights.close()
