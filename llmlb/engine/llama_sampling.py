"""One request's sampling, with llama.cpp's own samplers; and log probabilities.

The chain follows llama.cpp's common sampler (what llama-server and ollama run): penalties,
top-k, typical-p, top-p, min-p, temperature, and a draw from the distribution with the
request's seed. Each request has its own chain, so its random state depends on nothing but
its seed and its own tokens.

A grammar (JSON mode, schemas, tool calls) is kept beside the chain rather than first in it,
as llama-server does: checking it against the whole vocabulary costs milliseconds per token
(3.6-9 ms for SmolLM2's 49k tokens, more than the model's own step), so the chain samples
first, the grammar checks only the token it drew, and only a token it rejects makes the
grammar filter the whole vocabulary and the chain sample again. A grammar may be lazy: it
applies from the first time the model emits a trigger token (`<tool_call>`), as llama-server
constrains a tool call the model chose to make.
"""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass, field

import llama_cpp as lc
import numpy as np

from llmlb.engine.base import GenOptions, TokenLogprob
from llmlb.errors import BadRequest

RANDOM_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: llama.cpp picks one
NO_TOKEN = -1  # what sample() returns when the grammar admits no token at all
TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
assert TOKEN_DATA.itemsize == ctypes.sizeof(lc.llama_token_data)


@dataclass
class Sampler:
    """A request's sampler chain (it remembers the request's tokens for the penalties), and
    its grammar if it has one."""

    chain: ctypes.c_void_p
    grammar: ctypes.c_void_p | None = None
    n_vocab: int = 0
    _cands: np.ndarray | None = field(default=None, repr=False)
    _ids: np.ndarray | None = field(default=None, repr=False)

    def sample(self, ctx, index: int) -> int:
        """Sample from the logits of batch row `index`; the chain (and grammar) accept it.
        NO_TOKEN when the grammar rules out every token (an end of text included): llama.cpp
        aborts the process if told to accept a token its grammar refuses, so nothing is."""
        token = self.quick(ctx, index)
        return self.filtered(self.row(ctx, index)) if token is None else token

    def quick(self, ctx, index: int) -> int | None:
        """The chain's draw from batch row `index` when the grammar allows it (accepted), or
        when there is no grammar; None when the grammar refuses it: then the whole
        vocabulary must be filtered (`filtered`, on a copy of the row), which can take a
        grammar of thousands of alternatives half a second, so the decode loop does not."""
        if not self.grammar:
            return int(lc.llama_sampler_sample(self.chain, ctx, index))
        token = self._draw(self.row(ctx, index), with_grammar=False)
        if not self._allowed(token):
            return None
        lc.llama_sampler_accept(self.grammar, token)
        lc.llama_sampler_accept(self.chain, token)
        return token

    def filtered(self, logits: np.ndarray) -> int:
        """The draw after the grammar filtered the whole vocabulary (accepted); NO_TOKEN when
        it rules out every token."""
        token = self._draw(logits, with_grammar=True)
        # every candidate ruled out: the draw still picks one, with -inf odds
        if token == NO_TOKEN or not self._allowed(token):
            return NO_TOKEN
        lc.llama_sampler_accept(self.grammar, token)
        lc.llama_sampler_accept(self.chain, token)
        return token

    def row(self, ctx, index: int) -> np.ndarray:
        """The logits of batch row `index`, in the context's buffer (the next decode overwrites
        them: copy to keep)."""
        return np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, index), shape=(self.n_vocab,))

    def _draw(self, logits: np.ndarray, with_grammar: bool) -> int:
        if self._cands is None or self._ids is None:
            self._cands = np.empty(self.n_vocab, dtype=TOKEN_DATA)
            self._ids = np.arange(self.n_vocab, dtype=np.int32)
        cands = self._cands
        cands["id"] = self._ids
        cands["logit"] = logits
        cands["p"] = 0.0
        arr = lc.llama_token_data_array(
            data=cands.ctypes.data_as(lc.llama_token_data_p),
            size=self.n_vocab,
            selected=-1,
            sorted=False,
        )
        if with_grammar:
            lc.llama_sampler_apply(self.grammar, ctypes.byref(arr))
        lc.llama_sampler_apply(self.chain, ctypes.byref(arr))
        if not 0 <= arr.selected < arr.size:
            return NO_TOKEN
        return int(cands["id"][arr.selected])

    def _allowed(self, token: int) -> bool:
        one = lc.llama_token_data(token, 0.0, 0.0)
        arr = lc.llama_token_data_array(data=ctypes.pointer(one), size=1, selected=-1, sorted=False)
        lc.llama_sampler_apply(self.grammar, ctypes.byref(arr))
        return math.isfinite(one.logit)

    def close(self) -> None:
        if self.chain:
            lc.llama_sampler_free(self.chain)
            self.chain = None  # type: ignore[assignment]
        if self.grammar:
            lc.llama_sampler_free(self.grammar)
            self.grammar = None


def _grammar(vocab, opts: GenOptions):
    """The request's grammar sampler, or None (no grammar, or a lazy one whose trigger text
    is not one token of this vocabulary: then the output is parsed unconstrained)."""
    assert opts.grammar is not None
    if opts.grammar_trigger is None:
        grammar = lc.llama_sampler_init_grammar(vocab, opts.grammar.encode(), b"root")
    else:
        raw = opts.grammar_trigger.encode()
        buf = (lc.llama_token * 8)()
        n = lc.llama_tokenize(vocab, raw, len(raw), buf, 8, False, True)
        if n != 1:
            return None
        grammar = lc.llama_sampler_init_grammar_lazy_patterns(
            vocab, opts.grammar.encode(), b"root", None, 0, buf, 1
        )
    if not grammar:
        raise BadRequest("llama.cpp refused the grammar made for this request's format or tools")
    return grammar


def build(vocab, n_ctx: int, opts: GenOptions) -> Sampler:
    """A fresh chain for `opts`. The penalties look at the reply's own last repeat_last_n
    tokens, not at the prompt: llama-server feeds them the prompt too, and with ollama's
    default repeat_penalty of 1.1 a small model then avoids the very words of the question
    (SmolLM2 no longer answers "Paris" at temperature 0)."""
    grammar = _grammar(vocab, opts) if opts.grammar else None
    chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    add = lambda s: lc.llama_sampler_chain_add(chain, s)  # noqa: E731
    uses_penalties = (
        opts.repeat_penalty != 1.0 or opts.frequency_penalty != 0.0 or opts.presence_penalty != 0.0
    )
    if uses_penalties and opts.repeat_last_n != 0:
        last_n = n_ctx if opts.repeat_last_n < 0 else opts.repeat_last_n  # -1: the whole context
        penalties = lc.llama_sampler_init_penalties(
            lc.llama_vocab_n_tokens(vocab),
            last_n,
            opts.repeat_penalty,
            opts.frequency_penalty,
            opts.presence_penalty,
        )
        add(penalties)
    add(lc.llama_sampler_init_top_k(opts.top_k))
    add(lc.llama_sampler_init_typical(opts.typical_p, 1))
    add(lc.llama_sampler_init_top_p(opts.top_p, 1))
    add(lc.llama_sampler_init_min_p(opts.min_p, 1))
    add(lc.llama_sampler_init_temp_ext(opts.temperature, 0.0, 1.0))
    seed = RANDOM_SEED if opts.seed is None else opts.seed & 0xFFFFFFFF
    if seed == RANDOM_SEED and opts.seed is not None:
        seed = 0xFFFFFFFE  # a given seed never means "random"
    add(lc.llama_sampler_init_dist(seed))
    return Sampler(chain, grammar, lc.llama_vocab_n_tokens(vocab))


def logprobs(ctx, index: int, n_vocab: int, token: int, top: int, piece) -> TokenLogprob:
    """`piece(token)`: the bytes a token stands for."""
    """The log probability of `token` under the model's distribution at batch row `index`
    (before sampling changed it, as OpenAI and llama-server report), and the `top` best."""
    ptr = lc.llama_get_logits_ith(ctx, index)
    logits = np.ctypeslib.as_array(ptr, shape=(n_vocab,))
    peak = float(logits.max())
    lse = peak + math.log(float(np.exp(logits - peak).sum()))
    best: list[tuple[str, float, bytes]] = []
    if top > 0:
        ids = np.argpartition(-logits, top)[:top] if top < n_vocab else np.arange(n_vocab)
        ids = ids[np.argsort(-logits[ids], kind="stable")]
        best = [(_text(piece(int(i))), float(logits[i]) - lse, piece(int(i))) for i in ids]
    raw = piece(token)
    return TokenLogprob(_text(raw), float(logits[token]) - lse, best, raw)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")
