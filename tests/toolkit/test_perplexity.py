"""Perplexity on a slice of the held-out text, measured with llama.cpp on the real model."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.perplexity import GgufScorer, Quality, ReferenceStore, evaluate, heldout_text

N_CTX = 512
WINDOWS = 4  # 2048 tokens, 1020 of them scored


@pytest.fixture(scope="module")
def scores(ladder: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Quality]:
    out: dict[str, Quality] = {}
    store: ReferenceStore | None = None
    for name in ("F16", "Q8_0", "Q4_K_M", "Q2_K"):
        scorer = GgufScorer(ladder[name], N_CTX, threads=2)
        windows = scorer.windows(heldout_text(), N_CTX).limit(WINDOWS)
        if store is None:
            path = tmp_path_factory.mktemp("ref") / "ref.npy"
            store = ReferenceStore(path, windows, scorer.n_vocab, create=True)
            out[name] = evaluate(scorer, windows, record=store)
        else:
            out[name] = evaluate(scorer, windows, reference=store)
        scorer.close()
    return out


def test_heldout_text_is_long_enough() -> None:
    assert len(heldout_text()) > 100_000  # 37k SmolLM2 tokens; see toolkit/data/HELDOUT.md


def test_q8_0_is_within_one_percent_of_f16(scores: dict[str, Quality]) -> None:
    f16, q8 = scores["F16"], scores["Q8_0"]
    assert f16.scored_tokens == q8.scored_tokens == WINDOWS * (N_CTX - 1 - N_CTX // 2)
    assert 5 < f16.perplexity < 100  # a real language model on English prose
    assert abs(q8.perplexity / f16.perplexity - 1) < 0.01, (q8.perplexity, f16.perplexity)


def test_lower_bits_cost_quality(scores: dict[str, Quality]) -> None:
    q8, q4, q2 = scores["Q8_0"], scores["Q4_K_M"], scores["Q2_K"]
    assert q2.perplexity > q4.perplexity
    assert q8.kl_divergence is not None and q4.kl_divergence is not None and q2.kl_divergence is not None
    assert 0 < q8.kl_divergence < q4.kl_divergence < q2.kl_divergence
    assert q8.top1_agreement is not None and q2.top1_agreement is not None
    assert q8.top1_agreement > q2.top1_agreement
