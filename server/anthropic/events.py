"""Anthropic's named stream events, in its order, from one started generation:

``message_start``, ``ping``, then per content block ``content_block_start``,
``content_block_delta`` (``thinking_delta`` then one ``signature_delta``, ``text_delta``, or
``input_json_delta``) ..., ``content_block_stop``; then
``message_delta`` (stop reason, usage) and ``message_stop``. A failure after the 200 is an
``error`` event. The same generation, folded, is the non-streamed message.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from sse_starlette import ServerSentEvent

from server.anthropic.errors import error_event
from server.anthropic.render import MessageRenderer, delta_blocks, stop_reason, thinking_block, usage_dict
from server.http.event_json import event_json
from server.openai.choices import ChoiceState, Delta
from server.openai.streaming import Generation, close_stream, merged

log = logging.getLogger(__name__)

PING = {"type": "ping"}


def ping_event() -> ServerSentEvent:
    """Anthropic's keep-alive is a named event its SDKs skip, not an SSE comment."""
    return ServerSentEvent(event="ping", data=json.dumps(PING))


def _event(name: str, body: dict[str, Any]) -> dict[str, str]:
    return {"event": name, "data": event_json({"type": name, **body})}


# Anthropic sends a thinking block's signature last, just before the block closes.
_SIGNED = {"type": "signature_delta", "signature": thinking_block("")["signature"]}


class _Blocks:
    """Which content block is open. Thinking extends an open thinking block and text an open text
    block; anything else closes the open block first (a thinking block with its signature). A tool
    call opens, sends its one delta and closes. Whitespace-only text waits until real text
    follows, so the newline a model writes before a tool call never becomes a block of its own."""

    def __init__(self) -> None:
        self.count = 0
        self.open: str | None = None  # the kind of the open block: "thinking" or "text"
        self.pending = ""

    def events(self, delta: Delta) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        for block in delta_blocks(delta):
            if block["type"] == "thinking":
                out += self._extend("thinking", block["thinking"])
                continue
            if block["type"] == "text":
                out += self._text(block["text"])
                continue
            out += self.close()
            self.pending = ""
            index = self.count
            self.count += 1
            start = {**block, "input": {}}
            partial = json.dumps(block["input"], ensure_ascii=False)
            out.append(_event("content_block_start", {"index": index, "content_block": start}))
            out.append(_event("content_block_delta", {"index": index, "delta": _json_delta(partial)}))
            out.append(_event("content_block_stop", {"index": index}))
        return out

    def _text(self, text: str) -> list[dict[str, str]]:
        if self.open != "text":
            if not (self.pending + text).strip():
                self.pending += text
                return []
            text, self.pending = self.pending + text, ""
        return self._extend("text", text)

    def _extend(self, kind: str, text: str) -> list[dict[str, str]]:
        """A delta to the open block of this kind, opening one first (after closing another)."""
        out: list[dict[str, str]] = []
        if self.open != kind:
            out += self.close()
            self.open = kind
            self.count += 1
            empty = thinking_block("") if kind == "thinking" else {"type": "text", "text": ""}
            out.append(_event("content_block_start", {"index": self.count - 1, "content_block": empty}))
        delta = {"type": "thinking_delta", "thinking": text} if kind == "thinking" else _text_delta(text)
        out.append(_event("content_block_delta", {"index": self.count - 1, "delta": delta}))
        return out

    def finish(self, called_tools: bool) -> list[dict[str, str]]:
        """End of output: held whitespace is the answer only when nothing else was said."""
        out: list[dict[str, str]] = []
        if self.pending and not called_tools:
            text, self.pending = self.pending, ""
            out += self._extend("text", text)
        return out + self.close()

    def close(self) -> list[dict[str, str]]:
        if self.open is None:
            return []
        index = self.count - 1
        out = [] if self.open != "thinking" else [_event("content_block_delta", {"index": index, "delta": _SIGNED})]
        self.open = None
        return [*out, _event("content_block_stop", {"index": index})]


def _text_delta(text: str) -> dict[str, str]:
    return {"type": "text_delta", "text": text}


def _json_delta(partial: str) -> dict[str, str]:
    return {"type": "input_json_delta", "partial_json": partial}


async def message_events(gen: Generation, state: ChoiceState, shape: MessageRenderer) -> AsyncIterator[dict[str, str]]:
    yield _event("message_start", {"message": shape.message([])})
    yield _event("ping", {})
    blocks = _Blocks()
    stop_sequence: str | None = None
    stream = merged([gen])
    try:
        async for _, chunk in stream:
            for event in blocks.events(state.feed(chunk)):
                yield event
            stop_sequence = chunk.stop_sequence or stop_sequence
        for event in blocks.finish(bool(state.calls)):
            yield event
        reason = stop_reason(state.finish_reason, stop_sequence)
        delta = {"stop_reason": reason, "stop_sequence": stop_sequence if reason == "stop_sequence" else None}
        yield _event("message_delta", {"delta": delta, "usage": usage_dict(state.usage)})
        yield _event("message_stop", {})
    except Exception as exc:
        log.exception("message stream %s failed after its first token", shape.id)
        yield error_event(exc)
    finally:
        await close_stream(stream)


async def fold_message(gen: Generation, state: ChoiceState, shape: MessageRenderer) -> dict[str, Any]:
    stop_sequence: str | None = None
    stream = merged([gen])
    try:
        async for _, chunk in stream:
            state.feed(chunk)
            stop_sequence = chunk.stop_sequence or stop_sequence
    finally:
        await close_stream(stream)
    return shape.full(state, stop_sequence)
