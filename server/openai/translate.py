"""OpenAI request -> engine-neutral GenerationRequest; fields we cannot honour are refused by name."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from backends.chat_template import RESERVED
from backends.errors import InvalidRequest, UnsupportedParameter
from backends.reasoning import template_switches
from backends.tools import tools_or_format
from backends.types import (
    Constraint,
    GenerationRequest,
    GrammarConstraint,
    JsonConstraint,
    Message,
    SamplingParams,
    ToolCall,
    ToolDef,
)
from server.openai.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    JsonObjectFormat,
    JsonSchemaResponseFormat,
    NamedToolChoice,
    ResponseFormat,
    _SamplingFields,
)
from server.runtime.pool import ModelLimits

# field -> predicate on its value saying "this asks for behaviour we do not have yet".
_Check = Callable[[Any], bool]
_is_set: _Check = lambda v: v is not None  # noqa: E731
_truthy: _Check = lambda v: bool(v)  # noqa: E731
_more_than_one: _Check = lambda v: v is not None and v > 1  # noqa: E731

_CHAT_UNSUPPORTED: dict[str, _Check] = {
    # The deprecated predecessors of tools/tool_choice: clients should send those.
    "functions": _truthy,
    "function_call": lambda v: v is not None and v != "none",
    "modalities": lambda v: v is not None and v != ["text"],
    "audio": _is_set,
    "prediction": _is_set,
    "web_search_options": _is_set,
}
# A batch of prompts becomes prompts x n engine requests: keep it bounded.
MAX_PROMPTS = 64

_COMPLETION_UNSUPPORTED: dict[str, _Check] = {
    "best_of": _more_than_one,
}


def _refuse_unsupported(req: _SamplingFields, table: dict[str, _Check]) -> None:
    for field, asks_for_it in table.items():
        if asks_for_it(getattr(req, field)):
            raise UnsupportedParameter(
                f"'{field}' is not supported by this server yet; remove it from the request.", param=field
            )


def _logit_bias(req: _SamplingFields) -> tuple[tuple[int, float], ...]:
    return tuple((int(k), v) for k, v in (req.logit_bias or {}).items())


def choices(req: GenerationRequest, n: int) -> list[GenerationRequest]:
    """``n`` independent generations of one request (OpenAI's ``n``), each its own engine request.

    With a client seed, choice i uses seed + i: reproducible, yet the choices differ.
    """
    if n == 1:
        return [req]
    seed = req.sampling.seed
    return [
        dataclasses.replace(
            req,
            request_id=f"{req.request_id}-{i}",
            sampling=dataclasses.replace(req.sampling, seed=None if seed is None else (seed + i) % (2**32)),
        )
        for i in range(n)
    ]


def _sampling(req: _SamplingFields, max_tokens: int | None, logprobs: int | None = None) -> SamplingParams:
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
        logit_bias=_logit_bias(req),
        logprobs=logprobs,
        ignore_eos=bool(req.ignore_eos),
    )


def capped_max_tokens(wanted: int | None, limits: ModelLimits, param: str = "max_tokens") -> int | None:
    """The completion budget: the client's, refused above the model's cap; the cap when none is asked."""
    cap = limits.max_tokens
    if cap is not None and wanted is not None and wanted > cap:
        raise InvalidRequest(f"{param} is {wanted}; this model allows at most {cap}.", param=param)
    return wanted if wanted is not None else cap


def check_message_count(count: int, max_messages: int | None, param: str = "messages") -> None:
    if max_messages is not None and count > max_messages:
        raise InvalidRequest(
            f"The request has {count} messages; this server accepts at most {max_messages}.", param=param
        )


def chat_request(
    req: ChatCompletionRequest,
    request_id: str,
    limits: ModelLimits = ModelLimits(),  # noqa: B008 - immutable
    max_messages: int | None = None,
) -> GenerationRequest:
    _refuse_unsupported(req, _CHAT_UNSUPPORTED)
    check_message_count(len(req.messages), max_messages)
    if req.top_logprobs is not None and not req.logprobs:
        raise InvalidRequest("top_logprobs needs logprobs set to true.", param="top_logprobs")
    messages = []
    for msg in req.messages:
        # "developer" is OpenAI's newer name for the system role; templates know "system".
        role = "system" if msg.role == "developer" else msg.role
        calls = tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in msg.tool_calls or ())
        messages.append(Message(role, msg.text(), msg.name, calls, msg.tool_call_id, msg.reasoning_text()))
    tools, constraint = _tools_and_constraint(req)
    return GenerationRequest(
        request_id=request_id,
        sampling=_sampling(
            req, capped_max_tokens(req.wanted_tokens(), limits), (req.top_logprobs or 0) if req.logprobs else None
        ),
        messages=tuple(messages),
        max_prompt_tokens=limits.max_prompt_tokens,
        queue_timeout_s=limits.queue_timeout_s,
        tools=tools,
        constraint=constraint,
        template_kwargs=_template_kwargs(req),
        documents=None if req.documents is None else tuple(req.documents),
        split_reasoning=req.reasoning_format != "none",
    )


def _template_kwargs(req: ChatCompletionRequest) -> dict[str, Any]:
    kwargs = req.chat_template_kwargs or {}
    clash = sorted(RESERVED.intersection(kwargs))
    if clash:
        raise InvalidRequest(
            f"chat_template_kwargs may not set {', '.join(clash)}: send those as request fields.",
            param="chat_template_kwargs",
        )
    # The client's own template variables win over those its reasoning_effort sets.
    return {**template_switches(effort=req.reasoning_effort), **kwargs}


def _tools_and_constraint(req: ChatCompletionRequest) -> tuple[tuple[ToolDef, ...], Constraint | None]:
    """The tools the prompt shows and the output constraint, per OpenAI's tool_choice rules."""
    choice = req.tool_choice
    defs = tuple(
        ToolDef(t.function.name, t.function.description or "", t.function.parameters or {"type": "object"})
        for t in req.tools or ()
    )
    named = choice.function.name if isinstance(choice, NamedToolChoice) else choice
    output: JsonConstraint | GrammarConstraint | None = json_format_constraint(req.response_format)
    if req.grammar is not None:
        if output is not None:
            raise InvalidRequest("grammar and response_format cannot be combined; send one.", param="grammar")
        output = GrammarConstraint(req.grammar)
    return tools_or_format(
        defs,
        named,
        output,
        parallel=req.parallel_tool_calls is not False,
        format_param="grammar" if req.grammar is not None else "response_format",
    )


def json_format_constraint(fmt: ResponseFormat | None) -> JsonConstraint | None:
    """OpenAI's output format (chat's response_format, the Responses API's text.format) as a constraint."""
    if isinstance(fmt, JsonObjectFormat):
        return JsonConstraint()
    if isinstance(fmt, JsonSchemaResponseFormat):
        return JsonConstraint(fmt.json_schema.schema_ or {"type": "object"})
    return None


def completion_requests(
    req: CompletionRequest,
    request_id: str,
    limits: ModelLimits = ModelLimits(),  # noqa: B008 - immutable
) -> list[GenerationRequest]:
    """One generation per prompt: OpenAI takes a text, texts, token ids or lists of token ids."""
    _refuse_unsupported(req, _COMPLETION_UNSUPPORTED)
    prompts = _prompts(req.prompt)
    if req.echo and req.logprobs is not None:
        # OpenAI then also scores the prompt's own tokens, which our engines do not compute.
        raise UnsupportedParameter("echo together with logprobs is not supported; send one of them.", param="echo")
    if req.echo and req.suffix:
        raise InvalidRequest("echo and suffix cannot be combined.", param="suffix")
    wanted = req.max_tokens if "max_tokens" in req.model_fields_set else None
    max_tokens = capped_max_tokens(wanted, limits)
    if max_tokens is None:
        max_tokens = req.max_tokens  # OpenAI's default of 16 for completions
    sampling = _sampling(req, max_tokens, req.logprobs)
    return [
        GenerationRequest(
            request_id=request_id if len(prompts) == 1 else f"{request_id}-p{i}",
            sampling=sampling,
            prompt=prompt,
            max_prompt_tokens=limits.max_prompt_tokens,
            queue_timeout_s=limits.queue_timeout_s,
            suffix=req.suffix or None,
        )
        for i, prompt in enumerate(prompts)
    ]


def _prompts(prompt: str | list[str] | list[int] | list[list[int]]) -> list[str | tuple[int, ...]]:
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise InvalidRequest("prompt must not be an empty list.", param="prompt")
    if isinstance(prompt[0], int):
        return [tuple(prompt)]
    if len(prompt) > MAX_PROMPTS:
        raise InvalidRequest(f"at most {MAX_PROMPTS} prompts are allowed per request.", param="prompt")
    return [p if isinstance(p, str) else tuple(p) for p in prompt]
