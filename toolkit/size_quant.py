"""``quantserve quantize MODEL --size 100MiB`` / ``--bpw 5.0``: the per-tensor type mix that
minimises the predicted KL divergence and fits the budget, written by llama.cpp's own quantizer.

1. group the weights and price every (group, type) exactly (``mix_plan``, ``mix_types``); refuse
   at once a budget below the cheapest mix;
2. measure each group's KL at each type on calibration windows (``sensitivity``, cached);
3. choose one type per group, assuming KL adds up across groups (``mix_plan.choose``);
4. quantize with one override per tensor and check the file's size and types against the plan."""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from toolkit import mix_plan, sensitivity
from toolkit.gguf_splice import Layout, read_layout
from toolkit.mix_types import TYPES, BudgetError, MixError, candidate_types, padded
from toolkit.quantize_gguf import quantize_tensors

logger = logging.getLogger(__name__)
MiB = 1 << 20
Progress = Callable[[str, int, int], None]


def _quiet(_what: str, _done: int, _total: int) -> None:
    return None


@dataclass(frozen=True, slots=True)
class Budget:
    file_bytes: int | None = None  # the whole file, header and alignment included
    bits_per_weight: float | None = None  # tensor data bits over parameters, as `inspect` reports

    def __post_init__(self) -> None:
        if (self.file_bytes is None) == (self.bits_per_weight is None):
            raise BudgetError("give exactly one budget: a file size or bits per weight")

    def describe(self) -> str:
        if self.file_bytes is not None:
            return f"{self.file_bytes / MiB:.2f} MiB ({self.file_bytes:,} bytes)"
        return f"{self.bits_per_weight} bits per weight"


@dataclass(frozen=True, slots=True)
class SearchConfig:
    source: Path  # the F16 (or BF16 / F32) GGUF: the reference every KL is measured against
    dst: Path
    budget: Budget
    work_dir: Path  # score caches, calibration reference, per-type libraries while measuring
    calibration: sensitivity.Calibration
    imatrix: Path | None = None
    types: Sequence[str] | None = None  # candidate quantized types (None: every one that applies)
    bands: int = 5  # layer bands per role


@dataclass
class MixResult:
    path: Path
    budget: Budget
    file_bytes: int
    bits_per_weight: float
    mix: dict[str, str]  # group -> type
    groups: list[mix_plan.Group]
    predicted_kl: float  # on the calibration windows, summed over groups
    calibration_kl: float  # measured on the same windows: how far the sum is from the truth
    evaluations: int  # run now (the rest came from the cache)
    steps: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def type_counts(self) -> dict[str, int]:
        """Tensor type -> number of weight tensors given it (``inspect``'s view of the mix)."""
        counts: Counter[str] = Counter()
        for g in self.groups:
            counts[self.mix[g.name]] += len(g.tensors)
        return dict(counts.most_common())


def output_header_bytes(source: Layout) -> int:
    """The header llama.cpp's quantizer writes for this source: its metadata, plus the two keys
    it always sets (general.quantization_version, general.file_type: uint32) where absent, and
    the same tensor directory, padded to the alignment."""
    from backends.gguf_header import read_header

    keys = read_header(source.path).metadata
    added = sum(8 + len(k) + 4 + 4 for k in ("general.quantization_version", "general.file_type") if k not in keys)
    directory = sum(8 + len(n.encode()) + 4 + 8 * len(t.shape) + 4 + 8 for n, t in source.tensors.items())
    return padded(source.kv_end + added + directory, source.alignment)


def _capacity(source: Layout, fixed: dict[str, int], budget: Budget) -> tuple[int, int]:
    """(bytes the groups may take, bytes everything else takes)."""
    overhead = sum(fixed.values())
    if budget.file_bytes is not None:
        overhead += output_header_bytes(source)
        return budget.file_bytes - overhead, overhead
    assert budget.bits_per_weight is not None
    return math.floor(budget.bits_per_weight * source.n_weights / 8) - overhead, overhead


def plan_groups(cfg: SearchConfig, source: Layout) -> tuple[list[mix_plan.Group], int, int]:
    """(groups, capacity, overhead), refusing a budget below the cheapest mix before any work."""
    types = candidate_types(cfg.types, imatrix=cfg.imatrix is not None)
    groups, fixed = mix_plan.make_groups(source, types, cfg.bands, padded_sizes=cfg.budget.file_bytes is not None)
    capacity, overhead = _capacity(source, fixed, cfg.budget)
    cheapest = mix_plan.cheapest(groups)
    if capacity < cheapest:
        low, high = cheapest + overhead, mix_plan.richest(groups) + overhead
        if cfg.budget.file_bytes is not None:
            smallest, richest = f"{low / MiB:.2f} MiB ({low:,} bytes)", f"{high / MiB:.2f} MiB"
        else:
            smallest, richest = f"{_bpw(source, low):.3f} bits/weight", f"{_bpw(source, high):.3f}"
        raise BudgetError(
            f"a budget of {cfg.budget.describe()} is below the smallest mix of {source.path.name} with "
            f"these types: {smallest}, every weight at its cheapest candidate (the richest is {richest})"
        )
    return groups, capacity, overhead


def _bpw(source: Layout, data_bytes: int) -> float:
    return 8 * data_bytes / source.n_weights


def search(cfg: SearchConfig, progress: Progress = _quiet) -> MixResult:
    """Measure (or read cached) sensitivities, choose the mix, write and verify it."""
    started = time.monotonic()
    steps: dict[str, float] = {}
    source = read_layout(cfg.source)
    groups, capacity, overhead = plan_groups(cfg, source)
    folder = sensitivity.run_dir(cfg.work_dir, cfg.source, cfg.imatrix, cfg.calibration)
    t0 = time.monotonic()
    scores, evaluations = sensitivity.measure(
        source, groups, cfg.calibration, folder, imatrix=cfg.imatrix, progress=progress
    )
    steps["sensitivity"] = time.monotonic() - t0
    # a candidate llama.cpp would not write for a group has no score: it is not a candidate
    groups = [
        replace(g, costs={t: c for t, c in g.costs.items() if t == g.source_type or t in scores.get(g.name, {})})
        for g in groups
    ]
    mix = mix_plan.choose(groups, scores, capacity)
    progress("write the mix", 0, 1)
    t0 = time.monotonic()
    path = write(cfg, source, groups, mix)
    steps["write"] = time.monotonic() - t0
    progress("write the mix", 1, 1)
    data_bytes = _verify(path, source, groups, mix, cfg.budget, overhead)
    progress("KL of the mix on the calibration windows", 0, 1)
    measured = sensitivity.score_file(path, cfg.source, cfg.calibration, folder)
    progress("KL of the mix on the calibration windows", 1, 1)
    result = MixResult(
        path=path,
        budget=cfg.budget,
        file_bytes=path.stat().st_size,
        bits_per_weight=_bpw(source, data_bytes),
        mix=mix,
        groups=groups,
        predicted_kl=mix_plan.predicted_kl(groups, scores, mix),
        calibration_kl=measured,
        evaluations=evaluations,
        steps=steps,
        seconds=time.monotonic() - started,
    )
    logger.info(
        "%s: %.2f MiB, %.3f bits/weight, KL on calibration predicted %.4f, measured %.4f (%d evaluations, %.0f s)",
        path.name,
        result.file_bytes / MiB,
        result.bits_per_weight,
        result.predicted_kl,
        result.calibration_kl,
        evaluations,
        result.seconds,
    )
    return result


def write(cfg: SearchConfig, source: Layout, groups: Sequence[mix_plan.Group], mix: dict[str, str]) -> Path:
    """The mix through llama.cpp's quantizer: every tensor named with its type."""
    types = {n: TYPES[k].ggml_id for n, k in source.type_names.items()}
    weight: Counter[str] = Counter()
    for g in groups:
        types.update(dict.fromkeys(g.tensors, TYPES[mix[g.name]].ggml_id))
        weight[mix[g.name]] += g.costs[mix[g.name]]
    main = weight.most_common(1)[0][0]  # labels general.file_type, as "mostly Q4_1" does
    cfg.dst.parent.mkdir(parents=True, exist_ok=True)
    quantize_tensors(
        cfg.source, cfg.dst, types, file_type=TYPES[main].ftype, imatrix=cfg.imatrix, threads=cfg.calibration.workers
    )
    return cfg.dst


def _verify(
    path: Path, source: Layout, groups: Sequence[mix_plan.Group], mix: dict[str, str], budget: Budget, overhead: int
) -> int:
    """Tensor data bytes of the written file, after checking it is the plan: every tensor's type,
    the predicted size to the byte, and the budget."""
    written = read_layout(path)
    kinds = written.type_names
    wrong = [f"{n}: {kinds.get(n)} not {mix[g.name]}" for g in groups for n in g.tensors if kinds.get(n) != mix[g.name]]
    if wrong:
        raise MixError(f"llama.cpp wrote other types than planned: {'; '.join(wrong[:5])}")
    data = sum(t.nbytes for t in written.tensors.values())
    if budget.file_bytes is not None:
        size, predicted = path.stat().st_size, overhead + mix_plan.mix_bytes(groups, mix)
        if size != predicted or size > budget.file_bytes:
            raise MixError(f"{path.name} is {size:,} bytes; planned {predicted:,}, budget {budget.file_bytes:,}")
    elif budget.bits_per_weight is not None and _bpw(source, data) > budget.bits_per_weight:
        raise MixError(f"{path.name} has {_bpw(source, data):.4f} bits per weight, over {budget.bits_per_weight}")
    return data


def mix_lines(result: MixResult) -> list[str]:
    """One line per group, in file order: the chosen type and what the group weighs at it."""
    return [f"{g.name:<24} {result.mix[g.name]:<7} {g.costs[result.mix[g.name]] / MiB:8.2f} MiB" for g in result.groups]
