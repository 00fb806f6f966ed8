"""One OpenAI choice assembled from engine chunks: content, reasoning, tool calls, logprobs,
finish reason."""

from __future__ import annotations

from dataclasses import dataclass, field

from backends.call_formats import CallFormat
from backends.call_parser import CallParser, call_parser
from backends.types import GenerationChunk, GenerationRequest, TokenLogprob, ToolCall, ToolCallConstraint, Usage


def request_parser(req: GenerationRequest, fmt: CallFormat) -> CallParser | None:
    """The parser of the model family's calls, for output constrained to calls; None otherwise
    (a tool shown with tool_choice "none" is never parsed as one)."""
    return call_parser(fmt, req.tools) if isinstance(req.constraint, ToolCallConstraint) else None


@dataclass(slots=True)
class Delta:
    """What one engine chunk adds to a choice, in the client's terms."""

    text: str = ""
    reasoning: str = ""
    calls: list[ToolCall] = field(default_factory=list)
    logprobs: tuple[TokenLogprob, ...] = ()
    finish_reason: str | None = None


class ChoiceState:
    """Feeds engine chunks through the model family's tool-call parser (when tools may be called,
    see ``backends.call_parser``) and keeps the
    totals a non-streamed response needs. ``prefix`` is text shown before the generation
    (completions' ``echo``)."""

    def __init__(
        self, index: int, parser: CallParser | None = None, prefix: str = "", *, include_reasoning: bool = True
    ) -> None:
        self.index = index
        # False (vLLM's include_reasoning): the reasoning is left out of the response.
        self._include_reasoning = include_reasoning
        self.reasoning: list[str] = []
        self._parser = parser
        self._prefix = prefix
        self.text: list[str] = []
        self.calls: list[ToolCall] = []
        self.logprobs: list[TokenLogprob] = []
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.text_offset = 0  # characters shown so far (legacy completion logprobs report offsets)

    def feed(self, chunk: GenerationChunk) -> Delta:
        text, self._prefix = self._prefix + chunk.text, ""
        calls: list[ToolCall] = []
        if self._parser is not None:
            text, calls = self._parser.feed(text)
        finish = chunk.finish_reason
        if finish is not None:
            if self._parser is not None:
                rest, more = self._parser.finish()
                text += rest
                calls += more
            # OpenAI: a turn that ends by calling tools finishes with "tool_calls".
            if finish == "stop" and (self.calls or calls):
                finish = "tool_calls"
            self.finish_reason, self.usage = finish, chunk.usage
        reasoning = chunk.reasoning if self._include_reasoning else ""
        self.text.append(text)
        self.reasoning.append(reasoning)
        self.calls.extend(calls)
        self.logprobs.extend(chunk.logprobs)
        return Delta(text, reasoning, calls, chunk.logprobs, finish)


def total_usage(states: list[ChoiceState], n: int = 1) -> Usage | None:
    """One usage for all choices: each prompt counted once (its n choices share it, as OpenAI
    counts them), completions summed."""
    if any(s.usage is None for s in states):
        return None
    usages = [s.usage for s in states if s.usage is not None]
    firsts = usages[::n]
    return Usage(
        sum(u.prompt_tokens for u in firsts),
        sum(u.completion_tokens for u in usages),
        sum(u.cached_tokens for u in firsts),
        sum(u.reasoning_tokens for u in usages),
    )
