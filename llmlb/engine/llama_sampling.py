"""One request's sampling, with llama.cpp's own samplers; and log probabilities.

The chain follows llama.cpp's common sampler (what llama-server and ollama run): an optional
grammar first, then penalties, top-k, typical-p, top-p, min-p, temperature, and a draw from
the distribution with the request's seed. Each request has its own chain, so its random state
depends on nothing but its seed and its own tokens.
"""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass

import llama_cpp as lc
import numpy as np

from llmlb.engine.base import GenOptions, TokenLogprob
from llmlb.errors import BadRequest

RANDOM_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: llama.cpp picks one


@dataclass
class Sampler:
    """A request's sampler chain (it remembers the request's tokens for the penalties)."""

    chain: ctypes.c_void_p

    def sample(self, ctx, index: int) -> int:
        """Sample from the logits of batch row `index`; the chain accepts the token."""
        return int(lc.llama_sampler_sample(self.chain, ctx, index))

    def close(self) -> None:
        if self.chain:
            lc.llama_sampler_free(self.chain)
            self.chain = None  # type: ignore[assignment]


def build(vocab, n_ctx: int, opts: GenOptions) -> Sampler:
    """A fresh chain for `opts`. The penalties look at the reply's own last repeat_last_n
    tokens, not at the prompt: llama-server feeds them the prompt too, and with ollama's
    default repeat_penalty of 1.1 a small model then avoids the very words of the question
    (SmolLM2 no longer answers "Paris" at temperature 0)."""
    chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    add = lambda s: lc.llama_sampler_chain_add(chain, s)  # noqa: E731
    if opts.grammar:
        grammar = lc.llama_sampler_init_grammar(vocab, opts.grammar.encode(), b"root")
        if not grammar:
            lc.llama_sampler_free(chain)
            raise BadRequest("the grammar does not parse (GBNF with a 'root' rule expected)")
        add(grammar)
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
    return Sampler(chain)


def logprobs(ctx, index: int, n_vocab: int, token: int, top: int, piece) -> TokenLogprob:
    """The log probability of `token` under the model's distribution at batch row `index`
    (before sampling changed it, as OpenAI and llama-server report), and the `top` best."""
    ptr = lc.llama_get_logits_ith(ctx, index)
    logits = np.ctypeslib.as_array(ptr, shape=(n_vocab,))
    peak = float(logits.max())
    lse = peak + math.log(float(np.exp(logits - peak).sum()))
    best: list[tuple[str, float]] = []
    if top > 0:
        ids = np.argpartition(-logits, top)[:top] if top < n_vocab else np.arange(n_vocab)
        ids = ids[np.argsort(-logits[ids], kind="stable")]
        best = [(piece(int(i)), float(logits[i]) - lse) for i in ids]
    return TokenLogprob(piece(token), float(logits[token]) - lse, best)
