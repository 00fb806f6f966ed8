"""Per-request native sampler chains.

Sampling stays in C: ``llama_sampler_sample`` reads the logits row straight from the context,
so Python never copies the 49k-entry vocabulary row (the high-level API's numpy path costs ~40%
of decode speed on small models).
"""

from __future__ import annotations

import secrets
from typing import Any

import llama_cpp as lc

from backends.types import SamplingParams

# llama-server's default window for repetition penalties.
PENALTY_LAST_N = 64


def request_seed(sampling: SamplingParams) -> int:
    """The client's seed, or a fresh random one (never llama.cpp's "random" sentinel, so it can be logged)."""
    if sampling.seed is not None:
        return sampling.seed & 0xFFFFFFFF
    return secrets.randbelow(lc.LLAMA_DEFAULT_SEED)


def _has_penalties(p: SamplingParams) -> bool:
    return p.repeat_penalty != 1.0 or p.frequency_penalty != 0.0 or p.presence_penalty != 0.0


def build_chain(p: SamplingParams, *, n_vocab: int, seed: int) -> Any:
    """A sampler chain in llama.cpp's usual order; neutral stages are left out so they cost nothing.

    The caller owns the result and frees it with ``free_chain``.
    """
    chain_params = lc.llama_sampler_chain_default_params()
    chain_params.no_perf = True
    chain = lc.llama_sampler_chain_init(chain_params)
    stages: list[Any] = []
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
