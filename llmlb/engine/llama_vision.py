"""Requests with images: llama-cpp-python's LLaVA handler on a single-sequence instance.

The batched decode loop handles text only; an image has to be encoded by the projector and
its embeddings decoded, which llama-cpp-python's handler does on its own Llama object. That
object is made on the first image request and runs one such request at a time; text
requests to the same model keep going through the batched loop meanwhile. The weights are
memory-mapped, so on a CPU both instances share one copy in the page cache.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from llmlb import settings
from llmlb.engine.base import GenOptions, GenStats, Piece
from llmlb.errors import LlmlbError
from llmlb.store.models import Model


class Vision:
    def __init__(self, model: Model, n_ctx: int, gpu: bool):
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Llava15ChatHandler

        handler = Llava15ChatHandler(clip_model_path=str(model.projector_path), verbose=False)
        try:
            self.llm = Llama(
                model_path=str(model.path),
                n_ctx=n_ctx,
                n_gpu_layers=-1 if gpu else 0,
                chat_handler=handler,
                verbose=False,
                n_threads=settings.threads(),
                n_threads_batch=settings.threads(),
                n_batch=min(512, n_ctx),
            )
        except (ValueError, RuntimeError) as exc:
            raise LlmlbError(f"failed to load the vision path of '{model.name}': {exc}") from exc
        self.lock = threading.Lock()

    def chat(
        self,
        messages: list[dict[str, Any]],
        opts: GenOptions,
        cancel: threading.Event,
        stats: GenStats,
    ) -> Iterator[Piece]:
        from llama_cpp import LlamaGrammar, LogitsProcessorList

        eos = self.llm.token_eos()
        started = time.perf_counter_ns()
        first: list[int] = []

        def count_and_cancel(input_ids, scores):
            # once per sampled token: exact counts, and where a cancel ends the generation
            if not first:
                first.append(time.perf_counter_ns())
                stats.prompt_tokens = len(input_ids)
                stats.prompt_ns = first[0] - started
            stats.completion_tokens += 1
            stats.eval_ns = time.perf_counter_ns() - first[0]
            if cancel.is_set():
                scores[:] = -np.inf
                scores[eos] = 0.0
            return scores

        with self.lock:
            chunks: Iterator[dict[str, Any]] = self.llm.create_chat_completion(  # type: ignore[assignment]
                messages=messages,  # type: ignore[arg-type]
                logits_processor=LogitsProcessorList([count_and_cancel]),
                temperature=opts.temperature,
                top_p=opts.top_p,
                top_k=opts.top_k,
                min_p=opts.min_p,
                typical_p=opts.typical_p,
                repeat_penalty=opts.repeat_penalty,
                presence_penalty=opts.presence_penalty,
                frequency_penalty=opts.frequency_penalty,
                max_tokens=opts.max_tokens,
                seed=opts.seed,
                stop=opts.stop or None,
                grammar=LlamaGrammar.from_string(opts.grammar) if opts.grammar else None,
                stream=True,
            )
            for chunk in chunks:
                choice = chunk["choices"][0]
                text = choice.get("delta", {}).get("content")
                if choice.get("finish_reason"):
                    stats.finish_reason = choice["finish_reason"]
                if text:
                    yield Piece(text)
                if cancel.is_set():
                    stats.finish_reason = "cancelled"
                    break
        # llama.cpp samples once more before it notices the limit; that token is never output
        if opts.max_tokens and stats.completion_tokens > opts.max_tokens:
            stats.completion_tokens = opts.max_tokens

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            del self.llm
            llm.close()
