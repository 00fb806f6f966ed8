"""How much each tensor group costs in KL divergence at each candidate type: the F16 model with
only that group quantized, scored against the F16 model on a few calibration windows with the
ladder's evaluator (``toolkit.perplexity``).

Per type, llama.cpp quantizes every group still to be measured once (one "library" file, its
quantizer and its imatrix handling); each variant is then spliced from the F16 file and that
library (``gguf_splice``), loaded and scored. Scores are saved after every evaluation, keyed by
the source, the imatrix, the calibration text and window settings, so an interrupted search
resumes where it stopped and a second budget on the same model needs no evaluation at all.

Evaluations run in ``workers`` processes of one llama.cpp thread each, not in one process with
``workers`` threads: ggml's threads spin at every barrier, so on cores another job also wants,
two threads ran a 128-token window in ~8 s where one thread took 1.1 s (load average 8 on this
2-core machine). Separate processes never wait for each other, and one thread per evaluation
keeps the scores the same however many workers run."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from toolkit.gguf_splice import Layout, read_layout, splice
from toolkit.mix_plan import Group
from toolkit.mix_types import TYPES, MixError
from toolkit.perplexity import GgufScorer, ReferenceStore, Windows, evaluate
from toolkit.quantize_gguf import quantize_tensors

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (step, done, total), as toolkit.ladder's
Scores = dict[str, dict[str, float]]  # group -> candidate type -> KL divergence (nats / token)


@dataclass(frozen=True, slots=True)
class Calibration:
    text: str
    n_ctx: int = 256
    windows: int = 4  # at most: the default text holds 3 windows of 256 tokens
    workers: int = 2  # evaluations at once (one process, one llama.cpp thread each); quantizer threads


def run_dir(work_dir: Path, source: Path, imatrix: Path | None, calib: Calibration) -> Path:
    """The cache folder of one (source, imatrix, calibration) combination. The source is named by
    its content, not its path: the ladder's F16 and the CLI's are two identical files."""
    key = {
        "source": _file_digest(source),
        "imatrix": _file_digest(imatrix) if imatrix is not None else None,
        "text": _digest(calib.text.encode()),
        "n_ctx": calib.n_ctx,
        "windows": calib.windows,
    }
    return work_dir / f"{source.name.removesuffix('.gguf')}-{_digest(json.dumps(key, sort_keys=True).encode())}"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()[:16]


class ScoreCache:
    """``scores.json`` in the run folder: every finished evaluation, written atomically. A type
    llama.cpp would not give a group is kept as ``null`` so it is not retried."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, dict[str, float | None]] = json.loads(path.read_text()) if path.is_file() else {}

    def has(self, group: str, qtype: str) -> bool:
        return qtype in self.data.get(group, {})

    def put(self, group: str, qtype: str, kl: float | None) -> None:
        self.data.setdefault(group, {})[qtype] = kl
        tmp = self.path.with_name(self.path.name + ".partial")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, self.path)

    def scores(self) -> Scores:
        return {g: {t: kl for t, kl in by_type.items() if kl is not None} for g, by_type in self.data.items()}


def measure(
    source: Layout,
    groups: Sequence[Group],
    calib: Calibration,
    folder: Path,
    *,
    imatrix: Path | None = None,
    progress: Progress | None = None,
) -> tuple[Scores, int]:
    """(scores of every candidate of every group, evaluations run now): cached ones are read."""
    folder.mkdir(parents=True, exist_ok=True)
    cache = ScoreCache(folder / "scores.json")
    todo = [(g, t) for g in groups for t in g.candidates if t != g.source_type and not cache.has(g.name, t)]
    if not todo:
        return cache.scores(), 0
    ref_path = folder / "calibration-reference.npy"
    windows, store = reference(source.path, calib, ref_path)
    n_vocab = int(store.logprobs.shape[-1])
    done = 0
    # spawn, not fork: the parent holds llama.cpp and numpy threads a forked child would inherit
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=calib.workers, mp_context=context) as pool:
        for qtype in dict.fromkeys(t for _, t in todo):  # one library per type, in candidate order
            if progress is not None:
                progress("sensitivity", done, len(todo))
            need = [g for g, t in todo if t == qtype]
            library = _library(source, qtype, need, folder, calib.workers, imatrix)
            kinds = library.type_names
            jobs: dict[Future[float], Group] = {}
            for g in need:
                if any(kinds[n] != qtype for n in g.tensors):
                    # llama.cpp chose another type (the tensor cannot hold this one): no candidate
                    logger.warning("%s: llama.cpp does not write %s for it; dropped", g.name, qtype)
                    cache.put(g.name, qtype, None)
                    done += 1
                    continue
                variant = folder / f"variant-{g.name}-{qtype}.gguf"
                job = _Job(source, library, g.tensors, variant, windows, ref_path, n_vocab, calib.n_ctx)
                jobs[pool.submit(_run, job)] = g
            for future in as_completed(jobs):
                g = jobs[future]
                kl = future.result()
                cache.put(g.name, qtype, kl)
                logger.info("%s at %s: KL %.5f", g.name, qtype, kl)
                done += 1
                if progress is not None:
                    progress("sensitivity", done, len(todo))
            library.path.unlink()  # every score it served is saved; it is 100+ MB
    return cache.scores(), len(todo)


def reference(source: Path, calib: Calibration, path: Path) -> tuple[Windows, ReferenceStore]:
    """The calibration windows and the source's log-probabilities on them (computed once)."""
    scorer = GgufScorer(source, calib.n_ctx, threads=1)  # the workers' numerics, on any machine
    try:
        windows = scorer.windows(calib.text, calib.n_ctx).limit(calib.windows)
        if windows.count == 0:
            raise MixError(f"the calibration text is shorter than one window of {calib.n_ctx} tokens")
        if path.is_file():
            try:
                return windows, ReferenceStore(path, windows, scorer.n_vocab, create=False)
            except ValueError:
                logger.info("recomputing %s (it has another shape)", path.name)
        tmp = path.with_name("partial-" + path.name)  # renamed only once complete: resumable
        store = ReferenceStore(tmp, windows, scorer.n_vocab, create=True)
        evaluate(scorer, windows, record=store)
        cast("np.memmap[Any, Any]", store.logprobs).flush()  # on disk before it counts as done
        os.replace(tmp, path)
        return windows, ReferenceStore(path, windows, scorer.n_vocab, create=False)
    finally:
        scorer.close()


def _library(
    source: Layout, qtype: str, groups: Sequence[Group], folder: Path, threads: int, imatrix: Path | None
) -> Layout:
    """A file from llama.cpp's quantizer holding ``groups``' tensors in ``qtype`` (the rest as
    they are in the source: a copy, no quantization work). Reused if an interrupted run left it."""
    path = folder / f"library-{qtype}.gguf"
    wanted = {n for g in groups for n in g.tensors}
    if path.is_file():
        left = read_layout(path)
        if all(left.type_names.get(n) == qtype for n in wanted):
            return left
    own = source.type_names
    types = {n: TYPES[qtype if n in wanted else own[n]].ggml_id for n in source.tensors}
    quantize_tensors(source.path, path, types, file_type=TYPES[qtype].ftype, imatrix=imatrix, threads=threads)
    return read_layout(path)


@dataclass(frozen=True, slots=True)
class _Job:
    """One evaluation, everything a worker process needs (it shares no state with the parent)."""

    source: Layout
    library: Layout
    tensors: tuple[str, ...]
    variant: Path
    windows: Windows
    reference: Path
    n_vocab: int
    n_ctx: int


def _run(job: _Job) -> float:
    """In a worker: the source with ``job.tensors`` from the library, scored against the reference."""
    splice(job.source, dict.fromkeys(job.tensors, job.library), job.variant)
    try:
        store = ReferenceStore(job.reference, job.windows, job.n_vocab, create=False)
        return _kl(job.variant, job.windows, store, job.n_ctx)
    finally:
        job.variant.unlink(missing_ok=True)


def _kl(path: Path, windows: Windows, store: ReferenceStore, n_ctx: int) -> float:
    scorer = GgufScorer(path, n_ctx, threads=1)
    try:
        quality = evaluate(scorer, windows, reference=store)
    finally:
        scorer.close()
    assert quality.kl_divergence is not None  # a reference was given
    return quality.kl_divergence


def score_file(path: Path, source: Path, calib: Calibration, folder: Path) -> float:
    """KL of a whole model file against ``source`` on the calibration windows (the reference
    cached in ``folder`` by ``measure``, computed if missing)."""
    windows, store = reference(source, calib, folder / "calibration-reference.npy")
    return _kl(path, windows, store, calib.n_ctx)
