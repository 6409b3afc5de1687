"""llama-cpp-python behind the Backend interface. The only module that imports llama_cpp."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from llmlb import settings
from llmlb.engine.base import GenOptions, GenStats
from llmlb.errors import BadRequest, LlmlbError
from llmlb.store.models import Model

log = logging.getLogger("llmlb.engine")


def gpu_offload_supported() -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


def _pool(embedding: list) -> list[float]:
    """One unit-length vector per input, as ollama returns: mean over tokens when the model
    has no pooling of its own, then L2 normalisation."""
    arr = np.asarray(embedding, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr.mean(axis=0)
    norm = float(np.linalg.norm(arr))
    return (arr / norm if norm else arr).tolist()


class LlamaBackend:
    def __init__(self, model: Model, n_ctx: int, embedding: bool = False):
        from llama_cpp import Llama

        self.name = model.name
        self.model = model
        self.supports_images = bool(model.projector_path) and not embedding
        self.gpu = gpu_offload_supported()
        handler = None
        if self.supports_images:
            from llama_cpp.llama_chat_format import Llava15ChatHandler

            handler = Llava15ChatHandler(clip_model_path=str(model.projector_path), verbose=False)
        if model.format != "GGUF":
            raise BadRequest(f"model '{model.name}' is {model.format}; only GGUF models can be run")
        if not Path(model.path).exists():
            raise LlmlbError(f"model file for '{model.name}' is missing: {model.path}")
        n_ctx = min(n_ctx, model.context_length) if model.context_length else n_ctx
        try:
            self.llm = Llama(
                model_path=str(model.path),
                n_ctx=n_ctx,
                n_gpu_layers=-1 if self.gpu else 0,
                embedding=embedding,
                chat_handler=handler,
                verbose=False,
                # prompt processing too: llama.cpp's default there is every core, which
                # oversubscribes the CPU when several nodes or models share a machine
                n_threads=settings.threads(),
                n_threads_batch=settings.threads(),
                n_batch=min(512, n_ctx),
            )
        except (ValueError, RuntimeError) as exc:
            raise LlmlbError(f"failed to load model '{model.name}': {exc}") from exc
        self.n_ctx = n_ctx
        self.processor = "100% GPU" if self.gpu else "100% CPU"
        self.size_bytes = int(model.size_bytes) + self._kv_bytes()

    def _kv_bytes(self) -> int:
        """K and V caches in f16 for the whole context: what the model costs beyond its weights."""
        try:
            meta = self.llm.metadata
            arch = meta.get("general.architecture", "llama")
            layers = int(meta.get(f"{arch}.block_count", 0))
            embd = int(meta.get(f"{arch}.embedding_length", 0))
            heads = int(meta.get(f"{arch}.attention.head_count", 1)) or 1
            kv_heads = int(meta.get(f"{arch}.attention.head_count_kv", heads))
            return 2 * 2 * self.n_ctx * layers * embd * kv_heads // heads
        except (ValueError, TypeError):
            return 0

    def _hooks(self, opts: GenOptions, cancel: threading.Event, stats: GenStats):
        from llama_cpp import LogitsProcessorList

        eos = self.llm.token_eos()
        started = time.perf_counter_ns()
        first: list[int] = []

        def count_and_cancel(input_ids, scores):
            # Called once per sampled token: exact counts, and the one place to stop a
            # generation between tokens (forcing end-of-sequence ends it cleanly).
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

        return LogitsProcessorList([count_and_cancel])

    def _params(self, opts: GenOptions) -> dict[str, Any]:
        return dict(
            temperature=opts.temperature,
            top_p=opts.top_p,
            top_k=opts.top_k,
            max_tokens=opts.max_tokens,
            seed=opts.seed,
            stop=opts.stop or None,
            repeat_penalty=opts.repeat_penalty,
            stream=True,
        )

    def _count(self, message: dict[str, Any]) -> int:
        content = message.get("content") or ""
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        return (
            len(self.llm.tokenize(content.encode(), add_bos=False)) + 8
        )  # + the template's markers

    def fit(self, messages: list[dict[str, Any]], opts: GenOptions) -> list[dict[str, Any]]:
        """Drop the oldest turns (never the system prompt or the last message) until the
        prompt leaves room for the reply, as ollama does with long chats."""
        room = self.n_ctx - min(opts.max_tokens or self.n_ctx // 4, self.n_ctx // 2)
        counts = [self._count(m) for m in messages]
        keep = list(range(len(messages)))
        while sum(counts[i] for i in keep) > room:
            droppable = [i for i in keep[:-1] if messages[i]["role"] != "system"]
            if not droppable:
                break
            keep.remove(droppable[0])
        if len(keep) < len(messages):
            log.info(
                "%s: dropped %d old messages to fit the context of %d tokens",
                self.name,
                len(messages) - len(keep),
                self.n_ctx,
            )
        return [messages[i] for i in keep]

    def _check_fits(self, n_prompt: int) -> None:
        if n_prompt >= self.n_ctx:
            raise BadRequest(
                f"the prompt is {n_prompt} tokens; the context window of '{self.name}' "
                f"is {self.n_ctx} (LLMLB_CONTEXT_LENGTH)"
            )

    def chat(
        self,
        messages: list[dict[str, Any]],
        opts: GenOptions,
        cancel: threading.Event,
        stats: GenStats,
    ) -> Iterator[str]:
        messages = self.fit(messages, opts)
        self._check_fits(sum(self._count(m) for m in messages))
        # llama-cpp-python types its streamed chunks as a union with str; they are dicts
        chunks: Iterator[dict[str, Any]] = self.llm.create_chat_completion(  # type: ignore[assignment]
            messages=messages,  # type: ignore[arg-type]
            logits_processor=self._hooks(opts, cancel, stats),
            **self._params(opts),
        )
        for chunk in chunks:
            choice = chunk["choices"][0]
            text = choice.get("delta", {}).get("content")
            if choice.get("finish_reason"):
                stats.finish_reason = choice["finish_reason"]
            if text:
                yield text
            if cancel.is_set():
                stats.finish_reason = "cancelled"
                break
        self._settle(opts, stats)

    @staticmethod
    def _settle(opts: GenOptions, stats: GenStats) -> None:
        # llama.cpp samples once more before it notices the limit; that token is never output
        if opts.max_tokens and stats.completion_tokens > opts.max_tokens:
            stats.completion_tokens = opts.max_tokens

    def complete(
        self, prompt: str, opts: GenOptions, cancel: threading.Event, stats: GenStats
    ) -> Iterator[str]:
        self._check_fits(len(self.llm.tokenize(prompt.encode())))
        chunks: Iterator[dict[str, Any]] = self.llm.create_completion(  # type: ignore[assignment]
            prompt=prompt, logits_processor=self._hooks(opts, cancel, stats), **self._params(opts)
        )
        for chunk in chunks:
            choice = chunk["choices"][0]
            if choice.get("finish_reason"):
                stats.finish_reason = choice["finish_reason"]
            if choice.get("text"):
                yield choice["text"]
            if cancel.is_set():
                stats.finish_reason = "cancelled"
                break
        self._settle(opts, stats)

    def embed(self, inputs: list[str]) -> tuple[list[list[float]], int]:
        result = self.llm.create_embedding(inputs)
        vectors = [_pool(item["embedding"]) for item in result["data"]]
        return vectors, int(result["usage"]["prompt_tokens"])

    def tokenize_count(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode(), add_bos=False))

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            del self.llm
            llm.close()


def load(model: Model, n_ctx: int, embedding: bool) -> LlamaBackend:
    """The scheduler's loader: a model's file into a llama.cpp context."""
    return LlamaBackend(model, n_ctx, embedding=embedding)
