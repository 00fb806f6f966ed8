"""One OpenAI choice assembled from engine chunks: content, tool calls, logprobs, finish reason."""

from __future__ import annotations

from dataclasses import dataclass, field

from backends.tools import ToolCallParser
from backends.types import GenerationChunk, GenerationRequest, TokenLogprob, ToolCall, Usage


def callable_tools(req: GenerationRequest) -> frozenset[str]:
    """Names of the functions the output may call: parsed back out only when the output is
    constrained to calls (a tool shown with tool_choice "none" is never parsed as one)."""
    return frozenset(t.name for t in req.tools) if req.constraint is not None else frozenset()


@dataclass(slots=True)
class Delta:
    """What one engine chunk adds to a choice, in the client's terms."""

    text: str = ""
    calls: list[ToolCall] = field(default_factory=list)
    logprobs: tuple[TokenLogprob, ...] = ()
    finish_reason: str | None = None


class ChoiceState:
    """Feeds engine chunks through the tool-call parser (when tools may be called) and keeps the
    totals a non-streamed response needs. ``prefix`` is text shown before the generation
    (completions' ``echo``)."""

    def __init__(self, index: int, tool_names: frozenset[str] = frozenset(), prefix: str = "") -> None:
        self.index = index
        self._parser = ToolCallParser(tool_names) if tool_names else None
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
        self.text.append(text)
        self.calls.extend(calls)
        self.logprobs.extend(chunk.logprobs)
        return Delta(text, calls, chunk.logprobs, finish)


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
    )
