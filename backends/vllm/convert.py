"""Conversions between our engine-neutral types and vLLM's (imported lazily, inside functions).

Kept apart from ``backend.py`` so the lifecycle code stays short; nothing here holds state
except ``EngineCounts``, which one backend owns.
"""

from __future__ import annotations

from typing import Any

from backends.errors import BackendUnavailable, InvalidRequest, Overloaded
from backends.types import FinishReason, GenerationChunk, SamplingParams, Usage
from backends.vllm.startup import describe

# vLLM's finish reasons -> ours ("abort": the engine dropped it, e.g. on our own abort).
_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length", "abort": "cancelled", "error": "error"}


class EngineCounts:
    """Running/waiting/KV-usage as the engine's scheduler last reported them (fed by a vLLM
    stat logger: vLLM 0.32 has no getter for them on ``AsyncLLM``)."""

    def __init__(self) -> None:
        self.running = 0
        self.waiting = 0
        self.kv_cache_usage = 0.0

    def update(self, scheduler_stats: Any) -> None:
        if scheduler_stats is None:
            return
        self.running = int(scheduler_stats.num_running_reqs)
        self.waiting = int(scheduler_stats.num_waiting_reqs) + int(
            getattr(scheduler_stats, "num_skipped_waiting_reqs", 0)
        )
        self.kv_cache_usage = float(scheduler_stats.kv_cache_usage)


def stat_logger_factory(counts: EngineCounts) -> Any:
    """A vLLM per-engine stat-logger class that copies scheduler stats into ``counts``."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class _CountsLogger(StatLoggerBase):  # type: ignore[misc, unused-ignore]
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            self.engine_index = engine_index

        def record(
            self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None, engine_idx: int = 0
        ) -> None:
            counts.update(scheduler_stats)

        def log_engine_initialized(self) -> None:
            return None

    return _CountsLogger


def to_vllm_sampling(s: SamplingParams) -> Any:
    """Our sampling parameters as vLLM's, streaming deltas; invalid values -> ``InvalidRequest``."""
    from vllm import SamplingParams as VllmSamplingParams
    from vllm.sampling_params import RequestOutputKind

    try:
        return VllmSamplingParams(
            n=1,
            max_tokens=s.max_tokens,  # None: until EOS or the context is full
            temperature=s.temperature,  # 0 = greedy in vLLM
            top_p=s.top_p,
            top_k=s.top_k,  # 0 = disabled
            min_p=s.min_p,
            seed=s.seed,
            stop=list(s.stop) or None,  # vLLM holds back text that may start a stop string
            presence_penalty=s.presence_penalty,
            frequency_penalty=s.frequency_penalty,
            repetition_penalty=s.repeat_penalty,
            output_kind=RequestOutputKind.DELTA,
            skip_special_tokens=True,
        )
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(f"invalid sampling parameters: {describe(exc)}") from None


def to_chunk(out: Any, prompt_tokens: int, completion_so_far: int) -> tuple[GenerationChunk, bool]:
    """One DELTA ``RequestOutput`` as a chunk; the finished one carries finish_reason and usage.

    Token counts are the sampled token ids (EOS included, as vLLM's own server counts them).
    """
    seq = out.outputs[0]
    new_tokens = len(seq.token_ids)
    if not out.finished:
        return GenerationChunk(text=seq.text, tokens=new_tokens), False
    usage = Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_so_far + new_tokens,
        cached_tokens=int(out.num_cached_tokens or 0),
    )
    reason = _FINISH.get(str(seq.finish_reason), "stop")
    return GenerationChunk(text=seq.text, tokens=new_tokens, finish_reason=reason, usage=usage), True


def translate_error(model_id: str, exc: Exception, *, before_first: bool) -> Exception:
    """vLLM's request-time errors as ours (anything unknown is returned unchanged)."""
    from vllm.exceptions import GracefulHTTPError, VLLMClientError
    from vllm.v1.engine.exceptions import EngineDeadError

    if isinstance(exc, EngineDeadError):
        return BackendUnavailable(f"model {model_id!r}: the vLLM engine died")
    if isinstance(exc, GracefulHTTPError):  # admission control: max_num_queued_reqs reached
        return Overloaded(f"model {model_id!r} is at capacity; retry later")
    if isinstance(exc, VLLMClientError | ValueError) and before_first:
        return InvalidRequest(describe(exc))
    return exc
