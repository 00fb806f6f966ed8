"""The vectorised sampler against distributions worked out by hand (llama.cpp's chain semantics).

Each case forces a small support on a synthetic logits row (every other token far below), draws
many tokens with a fixed seed and runs a chi-square goodness-of-fit test. The threshold is
generous (p < 1e-4 fails) yet a wrong temperature, a truncation in the wrong order or an
off-by-one in the inverse CDF moves these counts far past it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from backends.llama_cpp.batch_sampling import CDF_BLOCK, BatchSampler, Draw, kept_tokens
from backends.types import SamplingParams

N_VOCAB = 2000
SUPPORT = {7: 2.0, 100: 1.5, 555: 1.0, 1234: 0.5, 1999: 0.0}  # token -> logit; the rest is -30
DRAWS = 20_000
# Chi-square critical values at p = 1e-4, by degrees of freedom.
CRITICAL = {1: 15.14, 2: 18.42, 3: 21.11, 4: 23.51}


def logits_rows(n_rows: int) -> np.ndarray:
    rows = np.full((n_rows, N_VOCAB), -30.0, dtype=np.float32)
    for token, logit in SUPPORT.items():
        rows[:, token] = logit
    return rows


def expected(temperature: float, keep: list[int]) -> dict[int, float]:
    weights = {t: math.exp(SUPPORT[t] / temperature) for t in keep}
    total = sum(weights.values())
    return {t: w / total for t, w in weights.items()}


def draw_counts(params: SamplingParams, seed: int = 42, ban: list[int] | None = None) -> dict[int, int]:
    """DRAWS tokens: 8 requests side by side (different seeds), each drawing DRAWS / 8 times."""
    n_req = 8
    sampler = BatchSampler(n_req, N_VOCAB)
    logits = logits_rows(n_req)
    banned = None if ban is None else np.array(ban, dtype=np.intp)
    draws = [Draw.of(params, seed + i, banned) for i in range(n_req)]
    counts: dict[int, int] = {}
    for _ in range(DRAWS // n_req):
        for token in sampler.sample(logits, list(range(n_req)), draws):
            counts[token] = counts.get(token, 0) + 1
    return counts


def chi_square(counts: dict[int, int], probs: dict[int, float]) -> float:
    assert set(counts) <= set(probs), f"sampled outside the allowed support: {set(counts) - set(probs)}"
    n = sum(counts.values())
    return sum((counts.get(t, 0) - n * p) ** 2 / (n * p) for t, p in probs.items())


# Kept sets by llama.cpp's rules on the raw (T=1) distribution: top_k first, then top_p (keep up
# to and including the token that reaches it), then min_p (logit >= max + log(min_p)).
# T=1 probabilities of SUPPORT: 0.4198, 0.2546, 0.1544, 0.0937, 0.0568 (cumulative 0.42, 0.67, 0.83, 0.92).
CASES = [
    (SamplingParams(temperature=1.0), list(SUPPORT)),
    (SamplingParams(temperature=0.5), list(SUPPORT)),
    (SamplingParams(temperature=2.0, top_k=3), [7, 100, 555]),
    (SamplingParams(temperature=1.0, top_p=0.8), [7, 100, 555]),
    (SamplingParams(temperature=1.0, min_p=0.3), [7, 100, 555]),  # exp(-1)=0.37 kept, exp(-1.5)=0.22 not
    (SamplingParams(temperature=0.7, top_k=4, top_p=0.75, min_p=0.05), [7, 100, 555]),
]


@pytest.mark.parametrize(("params", "keep"), CASES)
def test_sampled_tokens_follow_the_truncated_distribution(params: SamplingParams, keep: list[int]) -> None:
    probs = expected(params.temperature, keep)
    stat = chi_square(draw_counts(params), probs)
    assert stat < CRITICAL[len(keep) - 1], f"chi-square {stat:.1f} with {len(keep) - 1} degrees of freedom"


@pytest.mark.parametrize("offset", [-100.0, 85.0, 300.0])
@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_logits_far_from_zero_keep_their_distribution(offset: float, temperature: float) -> None:
    # Softmax ignores a common offset; float32's exp does not: e^85 overflows a block's sum and
    # e^-100 is 0, so such rows must be shifted by their peak first (and others need not be).
    sampler = BatchSampler(4, N_VOCAB)
    logits = logits_rows(4) + np.float32(offset)
    draws = [Draw.of(SamplingParams(temperature=temperature), 60 + i) for i in range(4)]
    counts: dict[int, int] = {}
    for _ in range(DRAWS // 4):
        for token in sampler.sample(logits, [0, 1, 2, 3], draws):
            counts[token] = counts.get(token, 0) + 1
    stat = chi_square(counts, expected(temperature, list(SUPPORT)))
    assert stat < CRITICAL[4], f"chi-square {stat:.1f}"


def test_the_test_rejects_a_wrong_temperature() -> None:
    # The same draws judged against the T=1 distribution when T=0.5 was asked: must fail.
    stat = chi_square(draw_counts(SamplingParams(temperature=0.5)), expected(1.0, list(SUPPORT)))
    assert stat > CRITICAL[4]


# A ban (ignore_eos) comes before every truncation, as llama-server's -inf logit bias does: with
# the top token 7 banned, T=1 probabilities of the rest are 0.4547, 0.2758, 0.1673, 0.1015.
BANNED_CASES = [
    (SamplingParams(temperature=1.0), [100, 555, 1234, 1999]),
    (SamplingParams(temperature=0.5), [100, 555, 1234, 1999]),
    (SamplingParams(temperature=2.0, top_k=3), [100, 555, 1234]),
    (SamplingParams(temperature=1.0, top_p=0.8), [100, 555, 1234]),
    (SamplingParams(temperature=1.0, min_p=0.3), [100, 555, 1234]),  # against the new peak 1.5
]


@pytest.mark.parametrize(("params", "keep"), BANNED_CASES)
def test_banned_tokens_are_never_drawn_and_the_rest_keep_their_odds(params: SamplingParams, keep: list[int]) -> None:
    stat = chi_square(draw_counts(params, ban=[7, 1500]), expected(params.temperature, keep))
    assert stat < CRITICAL[len(keep) - 1], f"chi-square {stat:.1f} with {len(keep) - 1} degrees of freedom"


@pytest.mark.parametrize(
    "params",
    [SamplingParams(temperature=0.0), SamplingParams(temperature=0.1), SamplingParams(temperature=0.1, top_k=2)],
)
def test_a_banned_token_far_above_the_rest_leaves_the_rest_drawable(params: SamplingParams) -> None:
    # The end token a model is sure of, at a low temperature: measured from the banned peak, every
    # allowed weight would be exp(-985), zero in float32. The top allowed token has ~99% here.
    logits = logits_rows(2)
    logits[:, 7] = 100.0
    ban = np.array([7], dtype=np.intp)
    sampler = BatchSampler(2, N_VOCAB)
    draws = [Draw.of(params, 5, ban), Draw.of(params, 6)]
    picked = [sampler.sample(logits, [1, 0], draws) for _ in range(200)]
    banned_row = [first for first, _ in picked]
    assert set(banned_row) <= {100, 555} and banned_row.count(100) > 180
    assert {second for _, second in picked} == {7}, "a neighbour without the ban keeps its own distribution"


@pytest.mark.parametrize("tokens", [[255, 256, 511, 512], [0, 1999], [1792, 1999]])
def test_the_draw_crosses_block_boundaries_exactly(tokens: list[int]) -> None:
    # The CDF is walked block by block (CDF_BLOCK tokens, the last block partial at 2000): tokens
    # on either side of a boundary, the first and the last token keep their exact probabilities.
    assert CDF_BLOCK == 256 and N_VOCAB % CDF_BLOCK
    support = {t: 1.0 - 0.3 * i for i, t in enumerate(tokens)}
    rows = np.full((8, N_VOCAB), -40.0, dtype=np.float32)
    for t, logit in support.items():
        rows[:, t] = logit
    sampler = BatchSampler(8, N_VOCAB)
    draws = [Draw.of(SamplingParams(temperature=1.0), 100 + i) for i in range(8)]
    counts: dict[int, int] = {}
    for _ in range(DRAWS // 8):
        for token in sampler.sample(rows, list(range(8)), draws):
            counts[token] = counts.get(token, 0) + 1
    total = sum(math.exp(v) for v in support.values())
    stat = chi_square(counts, {t: math.exp(v) / total for t, v in support.items()})
    assert stat < CRITICAL[len(tokens) - 1], f"chi-square {stat:.1f}"


def reference_kept(row: np.ndarray, d: Draw) -> list[int]:
    """llama.cpp's chain spelled out on the whole sorted vocabulary: top_k, top_p, min_p."""
    order = list(np.argsort(-row, kind="stable"))
    if d.top_k > 0:
        order = order[: d.top_k]
    peak = float(row[order[0]])
    if d.top_p < 1.0:
        weights = [math.exp(float(row[t]) - peak) for t in (order if d.top_k > 0 else range(len(row)))]
        total, cum, cut = sum(weights), 0.0, len(order)
        for i, t in enumerate(order):
            cum += math.exp(float(row[t]) - peak)
            if cum / total >= d.top_p:
                cut = i + 1
                break
        order = order[:cut]
    if d.min_p > 0.0:
        order = [t for t in order if float(row[t]) >= peak + math.log(d.min_p)] or order[:1]
    return [int(t) for t in order]


@pytest.mark.parametrize("scale", [0.3, 3.0, 12.0])
@pytest.mark.parametrize(
    ("top_k", "top_p", "min_p"),
    [(40, 1.0, 0.0), (0, 0.95, 0.0), (0, 0.5, 0.0), (0, 1.0, 0.05), (40, 0.95, 0.05), (7, 0.3, 0.0)],
)
def test_the_kept_tokens_match_a_sort_of_the_whole_vocabulary(
    scale: float, top_k: int, top_p: float, min_p: float
) -> None:
    # Flat rows (scale 0.3: the nucleus holds thousands of tokens) and peaked ones; rounded logits
    # make ties, which both sides break towards the lower token id.
    rng = np.random.default_rng(int(scale * 10) + top_k)
    d = Draw(1.0, top_k, top_p, min_p, np.random.Generator(np.random.PCG64(0)))
    for _ in range(3):
        row = np.round(rng.standard_normal(8192) * scale, 1).astype(np.float32)
        assert kept_tokens(row, d).tolist() == reference_kept(row, d)


def test_greedy_is_the_argmax_and_first_on_ties() -> None:
    logits = logits_rows(3)
    logits[1, 1500] = 5.0
    logits[2, 3] = logits[2, 9] = 9.0  # a tie: the lower id, as llama.cpp's greedy picks
    draws = [Draw.of(SamplingParams(temperature=0.0), 1) for _ in range(3)]
    assert BatchSampler(3, N_VOCAB).sample(logits, [0, 1, 2], draws) == [7, 1500, 3]


def test_a_seed_gives_the_same_tokens_whatever_the_neighbours() -> None:
    params = SamplingParams(temperature=1.0, seed=7)
    logits = logits_rows(4)
    alone = BatchSampler(1, N_VOCAB)
    crowd = BatchSampler(4, N_VOCAB)
    d_alone = Draw.of(params, 7)
    d_crowd = [Draw.of(SamplingParams(temperature=0.9, top_k=2), 3), Draw.of(params, 7), Draw.of(params, 8)]
    a = [alone.sample(logits, [0], [d_alone])[0] for _ in range(50)]
    b = [crowd.sample(logits, [0, 2, 3], d_crowd)[1] for _ in range(50)]
    assert a == b
    assert len(set(a)) > 1, "a sampled stream should not be constant"


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_a_row_draws_the_same_token_alone_as_in_a_crowd(temperature: float) -> None:
    # One or two full-distribution rows are drawn row by row, more in one set of array calls:
    # a request's tokens must not depend on which way its step took. Flat random rows put the
    # draws all over the vocabulary, so block and token boundaries are crossed many times.
    rng = np.random.default_rng(11)
    logits = rng.standard_normal((8, N_VOCAB)).astype(np.float32)
    params = SamplingParams(temperature=temperature)
    alone = [BatchSampler(1, N_VOCAB) for _ in range(8)]
    crowd = BatchSampler(8, N_VOCAB)
    d_alone = [Draw.of(params, 900 + i) for i in range(8)]
    d_crowd = [Draw.of(params, 900 + i) for i in range(8)]
    for _ in range(100):
        together = crowd.sample(logits, list(range(8)), d_crowd)
        assert together == [alone[i].sample(logits, [i], [d_alone[i]])[0] for i in range(8)]
    assert len(set(together)) > 1


@pytest.mark.parametrize(
    ("option", "env", "n_gpu_layers", "route"),
    [
        ("auto", None, 0, "numpy"),  # the CPU default
        ("auto", "native", 0, "native"),  # the variable switches models left on auto
        ("backend", "native", 0, "backend"),  # a model's own choice wins
        (None, "backend", 0, "backend"),
    ],
)
def test_the_sampler_option_picks_the_route(
    monkeypatch: pytest.MonkeyPatch, option: str | None, env: str | None, n_gpu_layers: int, route: str
) -> None:
    from backends.llama_cpp.batched import _sampler_route

    if env is None:
        monkeypatch.delenv("QUANTSERVE_LLAMA_SAMPLER", raising=False)
    else:
        monkeypatch.setenv("QUANTSERVE_LLAMA_SAMPLER", env)
    assert _sampler_route(option, n_gpu_layers) == route


def test_an_unknown_sampler_is_refused_by_the_options_and_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from backends.errors import ConfigError
    from backends.llama_cpp.batched import _sampler_route
    from backends.llama_cpp.options import LlamaCppOptions

    with pytest.raises(ValidationError, match="sampler"):
        LlamaCppOptions.model_validate({"sampler": "fast"})
    assert LlamaCppOptions.model_validate({"sampler": "native"}).sampler == "native"
    monkeypatch.setenv("QUANTSERVE_LLAMA_SAMPLER", "fast")
    with pytest.raises(ConfigError, match="sampler must be one of auto, numpy, backend, native; got 'fast'"):
        _sampler_route("auto", 0)
