"""Per-request native sampler chains, and which route samples a request.

Three routes (``SamplerRoute``): "numpy" samples every plain request of a step together
(``batch_sampling``); "backend" hands a request's chain to llama.cpp to run inside the decode
graph (on the GPU when the model is offloaded), so only the sampled token comes back; "native"
runs one ``llama_sampler_sample`` per sequence. Grammar, logit bias and penalties need state or
candidate rewriting that only the native chain has, so such requests take it on every route.
"""

from __future__ import annotations

import ctypes
import math
import secrets
from collections.abc import Callable, Sequence
from typing import Any, Literal

import llama_cpp as lc
import numpy as np

from backends.llama_cpp import grammar as gr
from backends.types import SamplingParams, TokenLogprob, TopLogprob

# llama-server's default window for repetition penalties.
PENALTY_LAST_N = 64


SamplerRoute = Literal["numpy", "backend", "native"]
SAMPLER_ROUTES: tuple[SamplerRoute, ...] = ("numpy", "backend", "native")


def request_seed(sampling: SamplingParams) -> int:
    """The client's seed, or a fresh random one (never llama.cpp's "random" sentinel, so it can be logged)."""
    if sampling.seed is not None:
        return sampling.seed & 0xFFFFFFFF
    return secrets.randbelow(lc.LLAMA_DEFAULT_SEED)


def _has_penalties(p: SamplingParams) -> bool:
    return p.repeat_penalty != 1.0 or p.frequency_penalty != 0.0 or p.presence_penalty != 0.0


def needs_native(p: SamplingParams, grammar: gr.Grammar | None) -> bool:
    """Whether only the native chain can sample this request (grammar, logit bias, penalties)."""
    return grammar is not None or bool(p.logit_bias) or _has_penalties(p)


def build_chain(
    p: SamplingParams,
    *,
    vocab: Any,
    n_vocab: int,
    seed: int,
    grammar: gr.Grammar | None = None,
    ban: Sequence[int] = (),
) -> Any:
    """A sampler chain in llama.cpp's usual order; neutral stages are left out so they cost nothing.

    Logit bias (the client's, and -inf for each ``ban`` token, as llama-server does for
    ``ignore_eos``) and the grammar come first, so every later stage (and greedy) only ever sees
    tokens the client allows. The caller owns the result and frees it with ``free_chain``.
    """
    chain_params = lc.llama_sampler_chain_default_params()
    chain_params.no_perf = True
    chain = lc.llama_sampler_chain_init(chain_params)
    stages: list[Any] = []
    pairs = [*p.logit_bias, *((t, -math.inf) for t in ban)]
    if pairs:
        biases = (lc.llama_logit_bias * len(pairs))(*(lc.llama_logit_bias(t, b) for t, b in pairs))
        stages.append(lc.llama_sampler_init_logit_bias(n_vocab, len(pairs), biases))
    if grammar is not None:
        stages.append(gr.sampler(grammar, vocab))
    if _has_penalties(p):
        stages.append(
            lc.llama_sampler_init_penalties(
                n_vocab, PENALTY_LAST_N, p.repeat_penalty, p.frequency_penalty, p.presence_penalty
            )
        )
    if p.temperature <= 0.0:
        stages.append(lc.llama_sampler_init_greedy())
    else:
        if p.top_k > 0:
            stages.append(lc.llama_sampler_init_top_k(p.top_k))
        if p.top_p < 1.0:
            stages.append(lc.llama_sampler_init_top_p(p.top_p, 1))
        if p.min_p > 0.0:
            stages.append(lc.llama_sampler_init_min_p(p.min_p, 1))
        stages.append(lc.llama_sampler_init_temp(p.temperature))
        stages.append(lc.llama_sampler_init_dist(seed))
    for stage in stages:
        # The chain takes ownership: freeing the chain frees its stages.
        lc.llama_sampler_chain_add(chain, stage)
    return chain


def prime_penalties(chain: Any, p: SamplingParams, prompt: list[int]) -> None:
    """Let repetition penalties see the prompt's tail, as llama-server does."""
    if _has_penalties(p):
        for token in prompt[-PENALTY_LAST_N:]:
            lc.llama_sampler_accept(chain, token)


def sample(chain: Any, ctx: Any, batch_index: int) -> int:
    """Sample (and accept into the chain) from the logits of one batch position."""
    return int(lc.llama_sampler_sample(chain, ctx, batch_index))


def free_chain(chain: Any) -> None:
    lc.llama_sampler_free(chain)


def token_logprobs(
    ctx: Any, batch_index: int, token: int, k: int, n_vocab: int, piece: Callable[[int], bytes]
) -> TokenLogprob:
    """The sampled token's log-probability under the model's raw distribution (before
    temperature, penalties, bias or grammar, as OpenAI and vLLM report it) and the ``k`` most
    likely tokens. Costs one pass over the vocabulary, so only requests that ask pay it."""
    row = np.ctypeslib.as_array(
        ctypes.cast(lc.llama_get_logits_ith(ctx, batch_index), ctypes.POINTER(ctypes.c_float)), shape=(n_vocab,)
    )
    peak = float(row.max())
    log_z = peak + math.log(float(np.exp(row - peak, dtype=np.float64).sum()))
    top: tuple[TopLogprob, ...] = ()
    if k > 0:
        best = np.argpartition(-row, k - 1)[:k]
        best = best[np.argsort(-row[best], kind="stable")]
        top = tuple(_top(int(t), float(row[t]) - log_z, piece) for t in best)
    data = piece(token)
    return TokenLogprob(_text(data), float(row[token]) - log_z, data, top)


def _top(token: int, logprob: float, piece: Callable[[int], bytes]) -> TopLogprob:
    data = piece(token)
    return TopLogprob(_text(data), logprob, data)


def _text(data: bytes) -> str:
    # A token may hold part of a UTF-8 character; OpenAI then shows the bytes escaped.
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(f"\\x{b:02x}" if b >= 0x80 else chr(b) for b in data)
