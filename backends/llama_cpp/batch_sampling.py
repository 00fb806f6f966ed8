"""Sampling every running sequence of a step together, in numpy, over the step's logits buffer.

One native ``llama_sampler_sample`` per sequence costs a copy of the 49k-entry vocabulary into
a candidate array, then the chain's stages, once per sequence per token. Here a step's rows are
handled at once: greedy is one ``argmax`` over the (n_outputs, n_vocab) view of llama.cpp's own
buffer (no copy); full-distribution sampling (OpenAI's defaults) is a handful of vectorised
passes over the sampled rows; top_k / top_p / min_p work on the few tokens they can keep.

Truncation follows llama.cpp's chain order exactly (top_k, then top_p and min_p on the raw
logits, then temperature), so a request means the same as with the native chain. Each request
draws from its own seeded ``numpy.random.Generator``: one uniform per token, whatever else runs
in the batch, so a seeded request is reproducible beside any neighbours. A request's banned
tokens (``ignore_eos``: the end-of-generation ones) are out of its row before anything else, as
llama-server's -inf logit bias takes them out.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from backends.types import SamplingParams

# Vocabulary entries per partial sum of a full-distribution draw's CDF (see _sample_full).
CDF_BLOCK = 256
# Unshifted exp(logit / T) is kept when every row's total weight is finite (no exp or block sum
# overflowed float32) and at least this: then the top weight is above e^-51, so weights down to 36
# below it are normal float32s, and what underflows is under 49,152 * e^-36 (1e-11) of the mass.
_TOTAL_LOW = math.exp(-40.0)
# Up to this many full-distribution rows, each is drawn on its own (see BatchSampler._draw_each).
FEW_ROWS = 2


@dataclass(slots=True)
class Draw:
    """One request's sampling settings and its random stream."""

    temperature: float
    top_k: int
    top_p: float
    min_p: float
    rng: np.random.Generator
    # Token ids this request must never get (``ignore_eos``: the end-of-generation tokens).
    ban: np.ndarray | None = None

    @classmethod
    def of(cls, p: SamplingParams, seed: int, ban: np.ndarray | None = None) -> Draw:
        return cls(p.temperature, p.top_k, p.top_p, p.min_p, np.random.Generator(np.random.PCG64(seed)), ban)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    @property
    def truncated(self) -> bool:
        return self.top_k > 0 or self.top_p < 1.0 or self.min_p > 0.0


class BatchSampler:
    """Samples the rows of one step; owns a scratch buffer so a step allocates nothing large."""

    def __init__(self, n_rows: int, n_vocab: int) -> None:
        self._n_vocab = n_vocab
        self._blocks = -(-n_vocab // CDF_BLOCK)
        # Padded to whole blocks; the padding is never written, so it stays weight 0.
        self._scratch = np.zeros((n_rows, self._blocks * CDF_BLOCK), dtype=np.float32)
        self._block_cdf = np.zeros((n_rows, self._blocks + 1), dtype=np.float64)  # column 0 stays 0

    def sample(self, logits: np.ndarray, rows: Sequence[int], draws: Sequence[Draw]) -> list[int]:
        """The token for each ``(rows[i], draws[i])``; ``logits`` is the step's (n_outputs, n_vocab) view."""
        out = [0] * len(rows)
        greedy = [i for i, d in enumerate(draws) if d.greedy]
        if greedy:
            if 2 * len(greedy) >= logits.shape[0]:
                best = logits.argmax(axis=1)  # one pass over the whole view beats row-by-row calls
                for i in greedy:
                    out[i] = int(best[rows[i]])
            else:
                for i in greedy:
                    out[i] = int(logits[rows[i]].argmax())
            for i in greedy:
                ban = draws[i].ban
                if ban is not None and bool((ban == out[i]).any()):  # rare: only then copy the row
                    out[i] = int(_without(logits[rows[i]], ban).argmax())
        full = [i for i, d in enumerate(draws) if not d.greedy and not d.truncated]
        if full:
            picked = self._sample_full(logits, [rows[i] for i in full], [draws[i] for i in full])
            for i, token in zip(full, picked, strict=True):
                out[i] = token
        for i, d in enumerate(draws):
            if not d.greedy and d.truncated:
                out[i] = _sample_truncated(logits[rows[i]], d)
        return out

    def _sample_full(self, logits: np.ndarray, rows: list[int], draws: list[Draw]) -> list[int]:
        """Inverse-CDF sampling of softmax(logits / T) over the whole vocabulary, all rows at once.

        The CDF is never built whole: a running sum over 49k entries is a serial loop in numpy
        (1.3 ms for 8 rows, most of this function, against 0.2 ms for the exp). Block sums are a
        vectorised reduction; each draw picks its block from their running sum, then its token from
        the running sum of that one block.
        """
        n = len(rows)
        work = self._scratch[:n, : self._n_vocab]
        # OpenAI's default temperature is 1: then no scaling pass at all.
        scale = None
        if any(d.temperature != 1.0 for d in draws):
            scale = np.array([1.0 / d.temperature for d in draws], dtype=np.float32)[:, None]
        # exp(logit / T) unshifted first: any common factor cancels in the draw, and real logits
        # keep float32's range, so the pass that finds each row's peak is only needed when not.
        cdf = self._block_cdf[:n]
        with np.errstate(over="ignore"):  # an overflow is caught below, by its total, and redone
            _exp(self._rows(logits, rows, draws, work), work, scale)
            blocks = self._block_sums(n, cdf)
        totals = cdf[:, -1].tolist()
        if not (min(totals) >= _TOTAL_LOW and max(totals) < math.inf):
            src = self._rows(logits, rows, draws, work)  # again: the exp may have overwritten them
            _exp(src, work, scale, peak=src.max(axis=1, keepdims=True))
            blocks = self._block_sums(n, cdf)
        # The first block, then the first token in it, whose cumulative weight exceeds u
        # (searchsorted's side="right"), so zero-weight tokens are never chosen. Both ways below
        # do the same arithmetic, so a row gets the same token alone or in a crowd.
        if n <= FEW_ROWS:
            return self._draw_each(blocks, cdf, draws)
        return self._draw_together(blocks, cdf, draws)

    def _rows(self, logits: np.ndarray, rows: list[int], draws: list[Draw], work: np.ndarray) -> np.ndarray:
        """The rows to sample, their banned tokens at -inf (so they weigh nothing, whatever the peak)."""
        bans = [(i, d.ban) for i, d in enumerate(draws) if d.ban is not None]
        if rows == list(range(len(rows))) and not bans:
            return logits[: len(rows)]  # every output row, in order: read llama.cpp's buffer directly
        np.take(logits, rows, axis=0, out=work)
        for i, ban in bans:
            work[i, ban] = -np.inf
        return work

    def _block_sums(self, n: int, cdf: np.ndarray) -> np.ndarray:
        """The weights as (row, block, token); ``cdf[:, b]`` becomes the weight before block b.

        Block sums in float32 (a float64 accumulator makes this pass 3x slower; einsum's vectorised
        loop is 3x faster than sum(axis=2) here), their running sum in float64 after a 0 column."""
        blocks = self._scratch[:n].reshape(n, self._blocks, CDF_BLOCK)
        np.cumsum(np.einsum("rbt->rb", blocks), axis=1, dtype=np.float64, out=cdf[:, 1:])
        return blocks

    def _draw_each(self, blocks: np.ndarray, cdf: np.ndarray, draws: Sequence[Draw]) -> list[int]:
        """Row by row with bisect on plain lists: for one or two rows, fewer array calls than
        ``_draw_together``, each of which runs on caches the decode has just evicted."""
        out = []
        for i, (d, row) in enumerate(zip(draws, cdf.tolist(), strict=True)):
            u = d.rng.random() * row[-1]
            b = min(bisect.bisect_right(row, u, 1) - 1, self._blocks - 1)
            weights = blocks[i, b]
            local = np.cumsum(weights, dtype=np.float64)
            local += row[b]
            out.append(self._token(weights, b, bisect.bisect_right(local.tolist(), u)))
        return out

    def _draw_together(self, blocks: np.ndarray, cdf: np.ndarray, draws: Sequence[Draw]) -> list[int]:
        """Every row in the same few array operations."""
        n = len(draws)
        u = np.array([d.rng.random() for d in draws]) * cdf[:, -1]
        b = np.minimum(np.count_nonzero(cdf[:, 1:] <= u[:, None], axis=1), self._blocks - 1)
        each = np.arange(n)
        chosen = blocks[each, b]
        local = np.cumsum(chosen, axis=1, dtype=np.float64)
        local += cdf[each, b][:, None]
        j = np.count_nonzero(local <= u[:, None], axis=1)
        picks = zip(b.tolist(), j.tolist(), strict=True)
        return [self._token(chosen[i], block, at) for i, (block, at) in enumerate(picks)]

    @staticmethod
    def _token(weights: np.ndarray, block: int, at: int) -> int:
        if at >= CDF_BLOCK:  # summed in another order, the block fell a rounding short of u
            at = int(np.flatnonzero(weights)[-1])
        return block * CDF_BLOCK + at


def _exp(src: np.ndarray, work: np.ndarray, scale: np.ndarray | None, peak: np.ndarray | None = None) -> None:
    """``work = exp((src - peak) * scale)``, the shift and the scale each left out when None."""
    if peak is not None:
        np.subtract(src, peak, out=work)
        src = work
    if scale is not None:
        np.multiply(src, scale, out=work)
        src = work
    np.exp(src, out=work)


def _sample_truncated(row: np.ndarray, d: Draw) -> int:
    """top_k, then top_p, then min_p (all on the raw logits, as llama.cpp chains them), then T."""
    if d.ban is not None:
        row = _without(row, d.ban)
    peak = float(row.max())
    pool = kept_tokens(row, d, peak)
    weights = np.exp((row[pool].astype(np.float64) - peak) / d.temperature)
    cdf = np.cumsum(weights)
    u = d.rng.random() * float(cdf[-1])
    return int(pool[min(int(np.searchsorted(cdf, u, side="right")), len(pool) - 1)])


def kept_tokens(row: np.ndarray, d: Draw, peak: float | None = None) -> np.ndarray:
    """The tokens top_k, top_p and min_p keep, most likely first (ties: the lower id first)."""
    n_vocab = row.shape[0]
    peak = float(row.max()) if peak is None else peak
    mass: float | None = None  # of the whole vocabulary, once computed
    if d.top_k > 0 and d.top_k < n_vocab:
        k = d.top_k
        pool = _sorted_desc(row, _within(row, peak, lambda keep: int(np.count_nonzero(keep)) >= k))[:k]
    elif d.min_p > 0.0:
        pool = _sorted_desc(row, np.flatnonzero(row >= peak + math.log(d.min_p)))  # bounds what top_p keeps
    elif d.top_p < 1.0:
        # Every token above some logit, far enough down to hold top_p of the mass: the nucleus is
        # its most likely tokens, so only this pool is sorted, never the whole vocabulary.
        weights = np.exp(row - peak, dtype=np.float64)  # the same terms the cumulative sum below adds
        mass = float(weights.sum())
        need = d.top_p * mass
        pool = _sorted_desc(row, _within(row, peak, lambda keep: float(weights[keep].sum()) >= need))
    else:
        pool = _sorted_desc(row, np.arange(n_vocab))
    if d.top_p < 1.0:
        if d.top_k > 0:  # top_p renormalises over what top_k kept
            total = float(np.exp(row[pool] - peak, dtype=np.float64).sum())
        elif mass is not None:
            total = mass
        else:
            total = float(np.exp(row - peak, dtype=np.float64).sum())
        cum = np.cumsum(np.exp(row[pool] - peak, dtype=np.float64)) / total
        # Keep tokens up to and including the one where the cumulative mass reaches top_p.
        pool = pool[: min(len(pool), int(np.searchsorted(cum, d.top_p, side="left")) + 1)]
    if d.min_p > 0.0:
        keep = int(np.count_nonzero(row[pool] >= peak + math.log(d.min_p)))
        pool = pool[: max(1, keep)]
    return pool


def _within(row: np.ndarray, peak: float, enough: Callable[[np.ndarray], bool]) -> np.ndarray:
    """Every token whose logit is within ``delta`` of the peak, for the first delta (2, 4, 8, ...)
    whose set is ``enough``; the whole vocabulary if none is.

    A partition over all 49k logits costs ~0.4 ms; a comparison pass ~0.02 ms, and real logits
    put the few dozen or hundred tokens a truncation keeps within a few units of the peak.
    """
    delta = 2.0
    for _ in range(24):
        keep = row >= peak - delta
        if enough(keep):
            return np.flatnonzero(keep)
        delta *= 2.0
    return np.arange(row.shape[0])


def _without(row: np.ndarray, ban: np.ndarray) -> np.ndarray:
    """A copy of ``row`` in which the banned tokens can never win or be drawn."""
    out = row.copy()
    out[ban] = -np.inf
    return out


def _sorted_desc(row: np.ndarray, pool: np.ndarray) -> np.ndarray:
    return pool[np.argsort(-row[pool], kind="stable")]
