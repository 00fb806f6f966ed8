"""Conversions between our engine-neutral types and vLLM's (imported lazily, inside functions).

Kept apart from ``backend.py`` so the lifecycle code stays short; nothing here holds state
except ``EngineCounts``, which one backend owns.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from backends import tools as tl
from backends.call_formats import FORMATS, CallFormat, call_format
from backends.chat_format import ChatFormat
from backends.embeddings import TokenizeRequest
from backends.errors import BackendUnavailable, InvalidRequest, Overloaded
from backends.types import (
    Constraint,
    FinishReason,
    GenerationChunk,
    GenerationRequest,
    GrammarConstraint,
    JsonConstraint,
    Message,
    SamplingParams,
    TokenLogprob,
    ToolCallConstraint,
    ToolDef,
    TopLogprob,
    Usage,
)
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


def structured_outputs(constraint: Constraint | None) -> Any:
    """Our output constraint as vLLM structured outputs (xgrammar): JSON natively; tool calls
    as a structural tag, so with tool_choice "auto" the text stays free until ``<tool_call>``."""
    if constraint is None:
        return None
    from vllm.sampling_params import StructuredOutputsParams

    if isinstance(constraint, GrammarConstraint):
        return StructuredOutputsParams(grammar=constraint.gbnf)
    if isinstance(constraint, JsonConstraint):
        # Compact JSON: free whitespace lets a small model indent itself into the token limit.
        if constraint.schema is None:
            return StructuredOutputsParams(json_object=True, disable_any_whitespace=True)
        return StructuredOutputsParams(json=constraint.schema, disable_any_whitespace=True)
    fmt = call_format(constraint.format)
    tags, trigger, separator = _call_tags(constraint, fmt)
    if constraint.required:
        # Nothing but calls: one or more tags, separated the family's way.
        body = {"type": "tags_with_separator", "tags": tags, "separator": separator, "at_least_one": True}
    else:
        # Free text until the family's trigger, then a valid call.
        body = {"type": "triggered_tags", "triggers": [trigger], "tags": tags}
    body["stop_after_first"] = not (constraint.parallel and fmt.parallel)
    fmt_json = body
    return StructuredOutputsParams(structural_tag=json.dumps({"type": "structural_tag", "format": fmt_json}))


def tag_format(fmt: CallFormat) -> CallFormat:
    """The family's format if structural tags can express it (one tag per call, no enclosing
    block, JSON arguments), else Hermes."""
    return FORMATS["hermes"] if fmt.block_open or fmt.shape == "xml" else fmt


def _call_tags(c: ToolCallConstraint, fmt: CallFormat) -> tuple[list[dict[str, Any]], str, str]:
    """One structural tag per tool (its name fixed in the tag's begin), the trigger, the separator."""
    if fmt.shape == "hermes":
        tag = {
            "type": "tag",
            "begin": f"{tl.OPEN}\n",
            "content": {"type": "json_schema", "json_schema": tl.call_schema(c.tools)},
            "end": f"\n{tl.CLOSE}",
        }
        return [tag], tl.OPEN, "\n"
    tags = []
    for t in c.tools:
        args = {"type": "json_schema", "json_schema": t.parameters or {"type": "object"}}
        if fmt.shape == "object":
            begin = f'{fmt.call_open}{{"name": "{t.name}", "{fmt.args_key}": '
            tags.append({"type": "tag", "begin": begin, "content": args, "end": "}" + fmt.call_close})
        else:
            begin = f"{fmt.call_open}{t.name}{fmt.name_sep}"
            tags.append({"type": "tag", "begin": begin, "content": args, "end": fmt.call_close})
    return tags, fmt.trigger, fmt.separator


def render_chat(tok: Any, req: GenerationRequest) -> str:
    """A chat request's prompt through the HF tokenizer's ``apply_chat_template`` (the same
    rendering ``backends.chat_template`` reproduces for GGUF models)."""
    assert req.messages is not None
    required = isinstance(req.constraint, ToolCallConstraint) and req.constraint.required
    return _apply_template(
        tok,
        req.messages,
        req.tools,
        required=required,
        documents=req.documents,
        template_kwargs=req.template_kwargs,
    )


def render_tokenize_chat(tok: Any, req: TokenizeRequest) -> str:
    """/tokenize's chat, rendered exactly as a chat request would be (tool turns included), so it
    counts the tokens generation would see."""
    assert req.messages is not None
    return _apply_template(
        tok,
        req.messages,
        (),
        add_generation_prompt=req.add_generation_prompt and not req.continue_final_message,
        continue_final_message=req.continue_final_message,
        template_kwargs=req.template_kwargs,
    )


def _apply_template(
    tok: Any,
    messages: Sequence[Message],
    tools: Sequence[ToolDef],
    *,
    required: bool = False,
    documents: Sequence[Any] | None = None,
    template_kwargs: Mapping[str, Any] | None = None,
    add_generation_prompt: bool = True,
    continue_final_message: bool = False,
) -> str:
    """The one way this backend renders a conversation."""
    native = "tools" in str(getattr(tok, "chat_template", "") or "")
    dicts = tl.template_messages(messages, tools, native=native, required=required)
    try:
        return str(
            tok.apply_chat_template(
                dicts,
                tools=tl.openai_tools(tools) if tools and native else None,
                documents=None if documents is None else list(documents),
                add_generation_prompt=add_generation_prompt,
                continue_final_message=continue_final_message,
                tokenize=False,
                **(template_kwargs or {}),
            )
        )
    except Exception as exc:
        message = f"the model's chat template rejected the messages: {describe(exc)}"
        raise InvalidRequest(message, param="messages") from None


def keeps_special_tokens(tok: Any, fmt: ChatFormat, calls: CallFormat) -> bool:
    """Must this model's text keep its special tokens? Yes when the family's reasoning or call
    markers are made of them (gpt-oss's ``<|channel|>``, ``<|message|>``, ``<|end|>``): vLLM's
    default detokenization (``skip_special_tokens``) would drop them, and nothing could split the
    output. (llama.cpp writes those out: it marks gpt-oss's channel tokens user-defined.)"""
    markers = [calls.block_open, calls.call_open, calls.name_sep, calls.call_close]
    if fmt.reasoning is not None:
        m = fmt.reasoning
        markers += [m.open, m.close, m.turn_start, m.answer_prefix]
    special = set(getattr(tok, "all_special_ids", None) or ())
    return any(t in special for text in markers if text for t in tok.encode(text, add_special_tokens=False))


def to_vllm_sampling(s: SamplingParams, constraint: Constraint | None = None, *, skip_special: bool = True) -> Any:
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
            ignore_eos=s.ignore_eos,
            output_kind=RequestOutputKind.DELTA,
            skip_special_tokens=skip_special,
            logprobs=s.logprobs,
            logit_bias=dict(s.logit_bias) or None,
            structured_outputs=structured_outputs(constraint),
        )
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(f"invalid sampling parameters: {describe(exc)}") from None


def to_chunk(out: Any, prompt_tokens: int, completion_so_far: int) -> tuple[GenerationChunk, bool]:
    """One DELTA ``RequestOutput`` as a chunk; the finished one carries finish_reason and usage.

    Token counts are the sampled token ids (EOS included, as vLLM's own server counts them).
    """
    seq = out.outputs[0]
    new_tokens = len(seq.token_ids)
    logprobs = _logprobs(seq)
    if not out.finished:
        return GenerationChunk(text=seq.text, tokens=new_tokens, logprobs=logprobs), False
    usage = Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_so_far + new_tokens,
        cached_tokens=int(out.num_cached_tokens or 0),
    )
    reason = _FINISH.get(str(seq.finish_reason), "stop")
    if reason == "stop" and seq.stop_reason is None and logprobs:
        # Stopped by the end-of-sequence token: it is not part of the text, so (as on llama.cpp)
        # it gets no logprobs entry; usage still counts it, as vLLM does.
        logprobs = logprobs[:-1]
    # vLLM's stop_reason is the matched stop string, a stop token id, or None (end of sequence).
    stop = seq.stop_reason if isinstance(seq.stop_reason, str) else None
    chunk = GenerationChunk(
        text=seq.text, tokens=new_tokens, finish_reason=reason, usage=usage, logprobs=logprobs, stop_sequence=stop
    )
    return chunk, True


def _logprobs(seq: Any) -> tuple[TokenLogprob, ...]:
    """vLLM's per-token {token id: Logprob} maps (the sampled token plus the top-k, ranked) as ours.

    vLLM reports raw model logprobs by default, the same quantity the llama.cpp backend reports.
    """
    if not seq.logprobs:
        return ()
    out = []
    for token_id, options in zip(seq.token_ids, seq.logprobs, strict=False):
        chosen = options[token_id]
        ranked = sorted(((lp.rank, tid, lp) for tid, lp in options.items() if lp.rank is not None), key=lambda r: r[0])
        top = tuple(TopLogprob(_tok(lp), float(lp.logprob), _tok(lp).encode()) for _, _, lp in ranked)
        out.append(TokenLogprob(_tok(chosen), float(chosen.logprob), _tok(chosen).encode(), top))
    return tuple(out)


def _tok(lp: Any) -> str:
    return str(lp.decoded_token or "")


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
