"""OpenAI request -> engine-neutral GenerationRequest; fields we cannot honour are refused by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from backends.errors import InvalidRequest, UnsupportedParameter
from backends.types import GenerationRequest, Message, SamplingParams
from server.pool import ModelLimits
from server.protocol import ChatCompletionRequest, CompletionRequest, _SamplingFields

# field -> predicate on its value saying "this asks for behaviour we do not have yet".
_Check = Callable[[Any], bool]
_is_set: _Check = lambda v: v is not None  # noqa: E731
_truthy: _Check = lambda v: bool(v)  # noqa: E731
_more_than_one: _Check = lambda v: v is not None and v > 1  # noqa: E731

_COMMON_UNSUPPORTED: dict[str, _Check] = {
    "n": _more_than_one,
    "logit_bias": _truthy,
}
_CHAT_UNSUPPORTED: dict[str, _Check] = {
    **_COMMON_UNSUPPORTED,
    "tools": _truthy,
    "tool_choice": lambda v: v is not None and v != "none",
    "functions": _truthy,
    "function_call": lambda v: v is not None and v != "none",
    "response_format": lambda v: v is not None and v.get("type") != "text",
    "logprobs": _truthy,
    "top_logprobs": _truthy,
    "modalities": lambda v: v is not None and v != ["text"],
    "audio": _is_set,
    "prediction": _is_set,
    "reasoning_effort": _is_set,
    "web_search_options": _is_set,
}
_COMPLETION_UNSUPPORTED: dict[str, _Check] = {
    **_COMMON_UNSUPPORTED,
    "echo": _truthy,
    "suffix": _truthy,
    "logprobs": _is_set,
    "best_of": _more_than_one,
}


def _refuse_unsupported(req: _SamplingFields, table: dict[str, _Check]) -> None:
    for field, asks_for_it in table.items():
        if asks_for_it(getattr(req, field)):
            raise UnsupportedParameter(
                f"'{field}' is not supported by this server yet; remove it from the request.", param=field
            )


def _sampling(req: _SamplingFields, max_tokens: int | None) -> SamplingParams:
    top_k = req.top_k if req.top_k is not None and req.top_k > 0 else 0
    repeat = req.repeat_penalty if req.repeat_penalty is not None else req.repetition_penalty
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=top_k,
        min_p=0.0 if req.min_p is None else req.min_p,
        stop=req.stop_tuple(),
        # Engines take a 32-bit seed; fold larger ones deterministically.
        seed=None if req.seed is None else req.seed % (2**32),
        presence_penalty=req.presence_penalty or 0.0,
        frequency_penalty=req.frequency_penalty or 0.0,
        repeat_penalty=1.0 if repeat is None else repeat,
    )


def _max_tokens(wanted: int | None, limits: ModelLimits) -> int | None:
    cap = limits.max_tokens
    if cap is not None and wanted is not None and wanted > cap:
        raise InvalidRequest(f"max_tokens is {wanted}; this model allows at most {cap}.", param="max_tokens")
    return wanted if wanted is not None else cap


def chat_request(
    req: ChatCompletionRequest,
    request_id: str,
    limits: ModelLimits = ModelLimits(),  # noqa: B008 - immutable
    max_messages: int | None = None,
) -> GenerationRequest:
    _refuse_unsupported(req, _CHAT_UNSUPPORTED)
    if max_messages is not None and len(req.messages) > max_messages:
        raise InvalidRequest(
            f"The request has {len(req.messages)} messages; this server accepts at most {max_messages}.",
            param="messages",
        )
    messages = []
    for i, msg in enumerate(req.messages):
        if msg.role == "tool" or msg.tool_calls:
            raise UnsupportedParameter(
                "tool messages and tool_calls are not supported by this server yet.", param=f"messages.{i}"
            )
        # "developer" is OpenAI's newer name for the system role; templates know "system".
        role = "system" if msg.role == "developer" else msg.role
        messages.append(Message(role=role, content=msg.text(), name=msg.name))
    return GenerationRequest(
        request_id=request_id,
        sampling=_sampling(req, _max_tokens(req.wanted_tokens(), limits)),
        messages=tuple(messages),
        max_prompt_tokens=limits.max_prompt_tokens,
        queue_timeout_s=limits.queue_timeout_s,
    )


def completion_request(
    req: CompletionRequest,
    request_id: str,
    limits: ModelLimits = ModelLimits(),  # noqa: B008 - immutable
) -> GenerationRequest:
    _refuse_unsupported(req, _COMPLETION_UNSUPPORTED)
    prompt = req.prompt
    if isinstance(prompt, list):
        if len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        else:
            raise UnsupportedParameter(
                "only a single string prompt is supported yet (no batches, no token-id prompts).", param="prompt"
            )
    wanted = req.max_tokens if "max_tokens" in req.model_fields_set else None
    max_tokens = _max_tokens(wanted, limits)
    if max_tokens is None:
        max_tokens = req.max_tokens  # OpenAI's default of 16 for completions
    return GenerationRequest(
        request_id=request_id,
        sampling=_sampling(req, max_tokens),
        prompt=prompt,
        max_prompt_tokens=limits.max_prompt_tokens,
        queue_timeout_s=limits.queue_timeout_s,
    )
