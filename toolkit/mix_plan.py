"""Which tensors share a type (groups), what each group may become, what each choice costs in
bytes, and the choice of one type per group that minimises the predicted KL divergence under a
size budget.

Groups are one role (attn_q, ffn_down, ...) over a band of consecutive layers, plus each tensor
outside the blocks (token_embd, output): few enough to measure every (group, type) pair, fine
enough that the first and last layers, which llama.cpp's recipes already treat as special, can
get their own types.

The choice is a multiple-choice knapsack (exactly one type per group, total bytes <= budget,
minimum total KL), solved exactly by dynamic programming over the budget in small units, not by
a greedy walk on marginal KL per byte: greedy is only optimal on each group's convex hull, and
these curves are not convex (on the default model Q4_1 is nearly lossless, because the F16
source is de-quantized Q4_1, while the larger Q5_0 is not), and it leaves budget unused at the
end. With a few dozen groups the DP takes well under a second. Each cost is rounded up to the
unit and the capacity down, so the real total never exceeds the budget."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from toolkit.gguf_splice import Layout
from toolkit.mix_types import TYPES, UNQUANTIZED, BudgetError, padded

_BLOCK = re.compile(r"^blk\.(\d+)\.(.+)$")
MAX_UNITS = 1 << 16  # DP resolution: the budget in at most this many steps


@dataclass(frozen=True, slots=True)
class Group:
    name: str  # "ffn_down@0-5", "token_embd"
    tensors: tuple[str, ...]
    source_type: str  # the reference's own type: KL 0 by definition
    costs: dict[str, int]  # candidate type (the source's own first) -> bytes the group takes

    @property
    def candidates(self) -> tuple[str, ...]:
        return tuple(self.costs)


def _quantizable(name: str, shape: tuple[int, ...], kind: str) -> bool:
    # llama.cpp quantizes 2-D+ ".weight" tensors and never the norms (tensor_allows_quantization)
    return len(shape) >= 2 and name.endswith(".weight") and "norm" not in name and kind in UNQUANTIZED


def make_groups(
    source: Layout, types: Sequence[str], bands: int, *, padded_sizes: bool = True
) -> tuple[list[Group], dict[str, int]]:
    """(groups, fixed): ``fixed`` maps every tensor no group holds to the bytes it takes as is.
    ``padded_sizes``: count alignment padding (file-size budgets) or not (bits per weight)."""
    align = source.alignment if padded_sizes else 1
    layers = [int(m.group(1)) for n in source.tensors if (m := _BLOCK.match(n))]
    n_layers = max(layers, default=-1) + 1
    members: dict[str, list[str]] = {}
    fixed: dict[str, int] = {}
    kinds = source.type_names
    for name, t in source.tensors.items():
        if not _quantizable(name, t.shape, kinds[name]):
            fixed[name] = padded(t.nbytes, align)
            continue
        match = _BLOCK.match(name)
        if match is None:
            key = name.removesuffix(".weight")
        else:
            band = int(match.group(1)) * bands // max(n_layers, 1)
            first = -(-band * n_layers // bands)
            last = -(-(band + 1) * n_layers // bands) - 1
            key = f"{match.group(2).removesuffix('.weight')}@{first}-{last}"
        members.setdefault(key, []).append(name)
    groups = []
    for key, names in members.items():
        own = {kinds[n] for n in names}
        if len(own) != 1:
            raise BudgetError(f"group {key} mixes source types {sorted(own)}")
        source_type = own.pop()
        costs = {source_type: sum(padded(source.tensors[n].nbytes, align) for n in names)}
        for qtype in types:
            kind = TYPES[qtype]
            if all(kind.fits(source.tensors[n].shape[0]) for n in names):
                costs[qtype] = sum(padded(kind.nbytes(source.tensors[n].shape), align) for n in names)
        groups.append(Group(key, tuple(names), source_type, costs))
    return groups, fixed


def cheapest(groups: Sequence[Group]) -> int:
    return sum(min(g.costs.values()) for g in groups)


def richest(groups: Sequence[Group]) -> int:
    return sum(max(g.costs.values()) for g in groups)


def choose(groups: Sequence[Group], kl: Mapping[str, Mapping[str, float]], capacity: int) -> dict[str, str]:
    """The type of each group minimising the summed ``kl[group][type]`` with summed bytes <=
    ``capacity``. Ties go to the larger type (a huge budget gives the richest mix)."""
    low = cheapest(groups)
    if capacity < low:
        raise BudgetError(f"needs {low - capacity:,} more bytes than the budget leaves ({capacity:,})")
    if capacity >= richest(groups):  # the rounding below could cost the last few bytes of this one
        return {g.name: max(g.costs, key=lambda t: (g.costs[t], -_value(g, kl, t))) for g in groups}
    # The DP runs on bytes above each group's cheapest type, so the cheapest mix costs 0 units
    # and stays feasible however coarse the unit.
    spare = min(capacity, richest(groups)) - low
    unit = max(1, -(-spare // MAX_UNITS))
    cells = spare // unit + 1
    best = np.zeros(cells)  # best[c]: least KL of the groups so far within c units
    options: list[list[tuple[str, int, float]]] = []
    picks: list[np.ndarray] = []
    for g in groups:
        base = min(g.costs.values())
        opts = [
            (t, -(-(cost - base) // unit), _value(g, kl, t))
            for t, cost in sorted(g.costs.items(), key=lambda item: -item[1])  # largest first wins a tie
        ]
        new = np.full(cells, np.inf)
        pick = np.zeros(cells, dtype=np.int16)
        for i, (_, w, value) in enumerate(opts):
            if w >= cells:
                continue
            trial = best[: cells - w] + value
            better = trial < new[w:]
            new[w:][better] = trial[better]
            pick[w:][better] = i
        best = new
        options.append(opts)
        picks.append(pick)
    out: dict[str, str] = {}
    c = cells - 1
    for g, opts, pick in zip(reversed(groups), reversed(options), reversed(picks), strict=True):
        qtype, w, _ = opts[int(pick[c])]
        out[g.name] = qtype
        c -= w
    return {g.name: out[g.name] for g in groups}


def _value(g: Group, kl: Mapping[str, Mapping[str, float]], qtype: str) -> float:
    """A group's KL at a type: 0 at the source's own type; a measured value below 0 is noise."""
    return 0.0 if qtype == g.source_type else max(float(kl[g.name][qtype]), 0.0)


def predicted_kl(groups: Sequence[Group], kl: Mapping[str, Mapping[str, float]], mix: Mapping[str, str]) -> float:
    return sum(_value(g, kl, mix[g.name]) for g in groups)


def mix_bytes(groups: Sequence[Group], mix: Mapping[str, str]) -> int:
    return sum(g.costs[mix[g.name]] for g in groups)
