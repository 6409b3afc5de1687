"""A loaded chat model on llama.cpp: one context with LLMLB_NUM_PARALLEL sequences and its
decode loop, the model's chat template, and the prompt checks that run before any decoding.

Only the engine's llama_* modules import llama_cpp, and only a runner process loads a model
(engine/runner_main.py). A request's prompt is rendered and tokenized on the runner's prepare
thread (never in the decode loop), after a size check that needs no tokenizing: a prompt
longer than the context times the longest token piece cannot fit, whatever it holds.
Requests with images take their own path through llama-cpp-python's LLaVA handler on a
second, single-sequence instance (llama_vision.py).
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import llama_cpp as lc

from llmlb import settings
from llmlb.engine import llama_log, llama_sampling
from llmlb.engine.base import GenOptions, GenStats, Piece, check_runnable, text_of
from llmlb.engine.llama_kv import KvTier, open_cache
from llmlb.engine.llama_loop import DecodeLoop, Job, token_bytes
from llmlb.engine.llama_template import ChatTemplate, NoChatTemplate, PromptTooLong
from llmlb.engine.memory import context_for, shape_of
from llmlb.engine.sink import Outbox
from llmlb.engine.thinking import CLOSE as THINK_CLOSE
from llmlb.engine.thinking import OPEN as THINK_OPEN
from llmlb.errors import BadRequest, LlmlbError
from llmlb.store.models import Model

log = logging.getLogger("llmlb.engine")
N_BATCH = 2048  # tokens a context takes per decode call, as llama-server
N_UBATCH = 512  # tokens per compute graph, as llama-server


def gpu_offload_supported() -> bool:
    return bool(lc.llama_supports_gpu_offload())


class LoadedModel:
    """Weights and vocabulary of a GGUF, loaded once (llama_model_load_from_file)."""

    def __init__(self, model: Model, progress: Callable[[float], None] | None = None):
        """`progress(fraction)` is called while the weights load."""
        llama_log.install()
        check_runnable(model)
        if not Path(model.path).exists():
            raise LlmlbError(f"its file is missing: {model.path}")
        lc.llama_backend_init()
        self.gpu = gpu_offload_supported()
        params = lc.llama_model_default_params()
        params.n_gpu_layers = -1 if self.gpu else 0
        if progress is not None:

            def report(fraction: float, _user: ctypes.c_void_p) -> bool:
                progress(fraction)
                return True

            callback = lc.llama_progress_callback(report)
            params.progress_callback = callback  # (kept referenced until the load returns)
        self.ptr = lc.llama_model_load_from_file(str(model.path).encode(), params)
        if not self.ptr:
            said = llama_log.last_error()
            raise LlmlbError("llama.cpp could not read the file" + (f": {said}" if said else ""))
        self.vocab = lc.llama_model_get_vocab(self.ptr)
        self.n_vocab = lc.llama_vocab_n_tokens(self.vocab)
        self.add_bos = bool(lc.llama_vocab_get_add_bos(self.vocab))
        # the longest text one token stands for bounds how many tokens a text has at least
        self.max_piece = max(
            1, max(len(token_bytes(self.vocab, t, special=True)) for t in range(self.n_vocab))
        )

    def meta(self, key: str) -> str | None:
        """A GGUF metadata value as text, or None."""
        buf = ctypes.create_string_buffer(256)
        n = lc.llama_model_meta_val_str(self.ptr, key.encode(), buf, len(buf))
        if n < 0:
            return None
        if n >= len(buf):
            buf = ctypes.create_string_buffer(n + 1)
            lc.llama_model_meta_val_str(self.ptr, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", "replace")

    def special_text(self, token: int) -> str:
        if token < 0:
            return ""
        return token_bytes(self.vocab, token, special=True).decode("utf-8", "replace")

    def tokenize(self, raw: bytes, add_bos: bool) -> list[int]:
        """Tokens of `raw`, special tokens (<|im_start|>...) parsed as such."""
        room = len(raw) + 2
        buf = (lc.llama_token * room)()
        n = lc.llama_tokenize(self.vocab, raw, len(raw), buf, room, add_bos, True)
        if n < 0:
            room = -n
            buf = (lc.llama_token * room)()
            n = lc.llama_tokenize(self.vocab, raw, len(raw), buf, room, add_bos, True)
        if n < 0:
            raise LlmlbError("llama.cpp could not tokenize the prompt")
        return list(buf[:n])

    def close(self) -> None:
        if self.ptr:
            lc.llama_model_free(self.ptr)
            self.ptr = None


def new_context(
    loaded: LoadedModel,
    n_ctx: int,
    n_seq: int,
    n_batch: int,
    n_ubatch: int,
    embeddings: bool,
    pooling: int = lc.LLAMA_POOLING_TYPE_UNSPECIFIED,
):
    params = lc.llama_context_default_params()
    params.n_ctx = n_ctx
    params.n_batch = n_batch
    params.n_ubatch = n_ubatch
    params.n_seq_max = n_seq
    params.n_threads = params.n_threads_batch = settings.threads()
    params.flash_attn_type = lc.LLAMA_FLASH_ATTN_TYPE_AUTO
    params.kv_unified = False  # a stream per sequence: faster when prompts do not share much
    params.embeddings = embeddings
    params.pooling_type = pooling
    if embeddings:
        params.kv_unified = True  # one pool: the inputs of one decode share it
    params.no_perf = True
    return lc.llama_init_from_model(loaded.ptr, params)


def apply_adapters(weights: LoadedModel, ctx, model: Model) -> None:
    """A created model's LoRA adapters (Modelfile ADAPTER), on this context; llama.cpp frees
    them with the weights."""
    adapters = model.adapters or []
    if not adapters:
        return
    loaded = []
    for a in adapters:
        ptr = lc.llama_adapter_lora_init(weights.ptr, str(a["path"]).encode())
        if not ptr:
            raise LlmlbError(
                f"the LoRA adapter {Path(a['path']).name} of '{model.name}' could not be loaded"
            )
        loaded.append(ptr)
    ptrs = (lc.llama_adapter_lora_p_ctypes * len(loaded))(*loaded)
    scales = (ctypes.c_float * len(loaded))(*(float(a.get("scale", 1.0)) for a in adapters))
    if lc.llama_set_adapters_lora(ctx, ptrs, len(loaded), scales) != 0:
        raise LlmlbError(f"llama.cpp could not apply the LoRA adapters of '{model.name}'")


class LlamaBackend:
    """A chat model: `parallel` requests decode at once, each with `n_ctx` tokens of context.
    Lives in a runner process: its decode loop sends every step's output through `outbox`."""

    def __init__(
        self,
        model: Model,
        n_ctx: int,
        parallel: int,
        outbox: Outbox,
        progress: Callable[[float], None] | None = None,
    ):
        self.name = model.name
        self.model = model
        self.n_ctx = context_for(model, n_ctx)
        self.parallel = parallel
        self.weights = LoadedModel(model, progress)
        self.gpu = self.weights.gpu
        self.ctx = new_context(
            self.weights, self.n_ctx * parallel, parallel, N_BATCH, N_UBATCH, embeddings=False
        )
        if not self.ctx:
            self.weights.close()
            raise LlmlbError(
                f"no memory for {parallel} x {self.n_ctx} tokens of context "
                "(lower LLMLB_NUM_PARALLEL or LLMLB_CONTEXT_LENGTH)"
            )
        try:
            apply_adapters(self.weights, self.ctx, model)
        except LlmlbError:
            lc.llama_free(self.ctx)
            self.weights.close()
            raise
        self.template = self._template()
        self.kv = KvTier(self.name, self.ctx, open_cache(model, outbox), outbox)
        self.loop: DecodeLoop | None = DecodeLoop(
            self.ctx, self.weights.vocab, self.name, parallel, self.n_ctx, N_UBATCH, outbox, self.kv
        )
        self.supports_images = bool(model.projector_path)
        self._vision: Any = None  # llama_vision.Vision, made on the first image
        self._vision_lock = threading.Lock()
        self.processor = "100% GPU" if self.gpu else "100% CPU"
        shape = shape_of(model.path)
        kv = shape.kv_bytes(self.n_ctx * parallel) if shape else 0
        self.size_bytes = int(model.size_bytes) + kv

    def _template(self) -> ChatTemplate | None:
        """The catalog's template (a created model's TEMPLATE), else the GGUF's own."""
        source = self.model.chat_template or (
            (lc.llama_model_chat_template(self.weights.ptr, None) or b"").decode("utf-8", "replace")
        )
        if not source:
            return None
        vocab = self.weights.vocab
        return ChatTemplate(
            self.name,
            source,
            bos=self.weights.special_text(lc.llama_vocab_bos(vocab)),
            eos=self.weights.special_text(lc.llama_vocab_eos(vocab)),
        )

    @property
    def has_chat_template(self) -> bool:
        return self.template is not None

    # -- a request, on the runner's prepare thread ------------------------------------------
    def chat_tokens(
        self,
        messages: list[dict[str, Any]],
        opts: GenOptions,
        variables: dict[str, Any],
    ) -> tuple[list[int], bool]:
        """The chat's prompt tokens, and whether the prompt opens the model's thinking."""
        if self.template is None:
            raise NoChatTemplate(self.name)
        kept = self.fit(messages, opts)
        room = self._room(opts)
        while True:  # the estimate was rough: measure the rendered prompt, drop more if needed
            try:
                rendered = self.template.render(kept, self.max_prompt_bytes, **variables)
            except PromptTooLong:
                raise BadRequest(
                    f"the prompt is more than {self.max_prompt_bytes} bytes, more than "
                    f"{self.n_ctx} tokens; the context window of '{self.name}' is "
                    f"{self.n_ctx} tokens (LLMLB_CONTEXT_LENGTH)"
                ) from None
            text, opens = self._thinking(rendered, opts)
            bos = self.template.bos
            add_bos = self.weights.add_bos and not (bos and text.startswith(bos))
            droppable = [i for i, m in enumerate(kept[:-1]) if m["role"] != "system"]
            raw = self._encode(text)
            fits = len(raw) <= self.max_prompt_bytes
            tokens = self.weights.tokenize(raw, add_bos) if fits else None
            if not droppable or (tokens is not None and len(tokens) <= room):
                return self._checked(raw, add_bos, tokens), opens
            del kept[droppable[0]]

    def prompt_tokens(self, text: str) -> list[int]:
        """A raw prompt's tokens."""
        return self._checked(self._encode(text), self.weights.add_bos)

    def after(self, context: list[int], tokens: list[int]) -> list[int]:
        """A prompt's tokens after `context` (an earlier answer's `context`: its conversation
        so far), as ollama continues one; the prompt's own BOS goes."""
        if any(t >= self.weights.n_vocab for t in context):
            raise BadRequest(
                f"field 'context' holds a token id outside the vocabulary of '{self.name}'"
            )
        bos = lc.llama_vocab_bos(self.weights.vocab)
        if context and tokens and tokens[0] == bos:
            tokens = tokens[1:]
        return self._checked(b"", False, context + tokens)

    def sampler(self, opts: GenOptions) -> llama_sampling.Sampler:
        return llama_sampling.build(self.weights.vocab, self.n_ctx, opts)

    def submit(self, job: Job) -> None:
        loop = self.loop
        if loop is None:
            raise LlmlbError(f"model '{self.name}' was unloaded")
        if job.opts.seed is None:  # a seeded prompt is computed whole (llama_loop._chunk)
            job.hit = self.kv.lookup(job.tokens, loop.seqs)  # (this is the prepare thread)
        loop.submit(job)

    @staticmethod
    def _thinking(text: str, opts: GenOptions) -> tuple[str, bool]:
        """A prompt that opens the model's thinking (`<think>` at its end): the reply starts
        inside it; unless a grammar holds the reply from its first token, which leaves no
        room for thinking, so the thinking is closed at once."""
        if not text.rstrip().endswith(THINK_OPEN):
            return text, False
        if opts.grammar and not opts.grammar_trigger:
            return text.rstrip() + "\n\n" + THINK_CLOSE + "\n\n", False
        return text, True

    @property
    def max_prompt_bytes(self) -> int:
        """No text longer than this fits the context, whatever it holds."""
        return self.n_ctx * self.weights.max_piece

    def _encode(self, text: str) -> bytes:
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BadRequest("the prompt is not valid text (it holds a lone surrogate)") from exc

    def _checked(self, raw: bytes, add_bos: bool, tokens: list[int] | None = None) -> list[int]:
        """The prompt's tokens (`tokens`, when already counted), or a 400 saying why it cannot
        be run: too long in bytes (checked before tokenizing), empty, or too long in tokens."""
        if len(raw) > self.max_prompt_bytes:
            raise BadRequest(
                f"the prompt is {len(raw)} bytes, more than {self.n_ctx} tokens; the context "
                f"window of '{self.name}' is {self.n_ctx} tokens (LLMLB_CONTEXT_LENGTH)"
            )
        if tokens is None:
            tokens = self.weights.tokenize(raw, add_bos)
        if not tokens:
            raise BadRequest("the prompt is empty")
        if len(tokens) >= self.n_ctx:
            raise BadRequest(
                f"the prompt is {len(tokens)} tokens; the context window of '{self.name}' "
                f"is {self.n_ctx} (LLMLB_CONTEXT_LENGTH)"
            )
        return tokens

    def _count(self, message: dict[str, Any]) -> int:
        raw = self._encode(text_of(message.get("content")))
        if len(raw) > self.max_prompt_bytes:
            return self.n_ctx + 1  # too long to count, and too long to keep
        return len(self.weights.tokenize(raw, False)) + 8  # + the template's markers

    def _room(self, opts: GenOptions) -> int:
        """Prompt tokens that leave room for the reply."""
        return self.n_ctx - min(opts.max_tokens or self.n_ctx // 4, self.n_ctx // 2)

    def fit(self, messages: list[dict[str, Any]], opts: GenOptions) -> list[dict[str, Any]]:
        """Drop the oldest turns (never the system prompt or the last message) until the
        prompt leaves room for the reply, as ollama does with long chats."""
        room = self._room(opts)
        # a token stands for one byte at least: a chat this short fits without counting
        if (
            sum(len(text_of(m.get("content")).encode("utf-8", "replace")) + 8 for m in messages)
            <= room
        ):
            return messages
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

    def vision_chat(
        self,
        messages: list[dict[str, Any]],
        opts: GenOptions,
        cancel: threading.Event,
        stats: GenStats,
    ) -> Iterator[Piece]:
        """A chat with images (blocking: run it on a thread of its own)."""
        from llmlb.engine.llama_vision import Vision

        if not self.supports_images:
            raise BadRequest(f"model '{self.name}' does not support images")
        with self._vision_lock:  # loaded on the first image
            if self._vision is None:
                self._vision = Vision(self.model, self.n_ctx, self.gpu)
            vision = self._vision
        return vision.chat(self.fit(messages, opts), opts, cancel, stats)

    def shutdown(self, secs: float) -> None:
        """Unloading: stop the loop, then save what the prompt cache keeps, within `secs`.
        The process leaves next, so nothing is freed by hand."""
        loop, self.loop = self.loop, None
        if loop is not None:
            loop.close()
            self.kv.save_all(loop.seqs, secs)

    def close(self) -> None:
        loop, self.loop = self.loop, None
        if loop is not None:
            loop.close()
        if self._vision is not None:
            self._vision.close()
            self._vision = None
        if getattr(self, "ctx", None):
            lc.llama_free(self.ctx)
            self.ctx = None
        self.weights.close()
