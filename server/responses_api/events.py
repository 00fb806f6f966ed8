"""The Responses API's typed stream events, in OpenAI's order, from one started generation:

``response.created``, ``response.in_progress``; per output item ``response.output_item.added``,
then for a message ``response.content_part.added``, ``response.output_text.delta`` ...,
``response.output_text.done``, ``response.content_part.done`` (for a reasoning item the same with
``response.reasoning_text.delta`` / ``.done``), or for a function call
``response.function_call_arguments.delta`` and ``.done``; then ``response.output_item.done``;
last ``response.completed`` (``response.incomplete`` when max_output_tokens cut it short). Every
event carries a ``sequence_number``. A failure after the 200 is an ``error`` event.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from server.http.errors import describe
from server.http.event_json import event_json
from server.openai.choices import ChoiceState
from server.openai.streaming import Generation, close_stream, merged
from server.responses_api.render import (
    ResponseShape,
    item_id,
    message_item,
    output_items,
    reasoning_item,
    reasoning_part,
    text_part,
)

log = logging.getLogger(__name__)

Frame = dict[str, str]


@dataclass(frozen=True, slots=True)
class _Kind:
    """How an item streamed part by part is written: its item, its one content part, and the
    prefix of its delta/done events (plus what those events carry besides the text)."""

    item: Callable[[str, str | None, str], dict[str, Any]]
    part: Callable[[str], dict[str, Any]]
    events: str
    extra: dict[str, Any]


_KINDS = {
    "reasoning": _Kind(reasoning_item, reasoning_part, "response.reasoning_text", {}),
    "message": _Kind(message_item, text_part, "response.output_text", {"logprobs": []}),
}


class _Output:
    """The output so far and the item still open. Reasoning extends an open reasoning item and
    text an open message; anything else closes the open item first. A function call is sent
    whole. Whitespace-only text waits for real text, so the newline a model writes before a call
    never becomes a message of its own."""

    def __init__(self, event: Callable[[str, dict[str, Any]], Frame]) -> None:
        self.event = event
        self.items: list[dict[str, Any]] = []
        self.open_id: str | None = None
        self.open_kind = ""  # a key of _KINDS while an item is open
        self.text = ""
        self.pending = ""

    def add(self, items: list[dict[str, Any]]) -> list[Frame]:
        out: list[Frame] = []
        for item in items:
            if item["type"] == "reasoning":
                out += self._extend("reasoning", item["content"][0]["text"], item["id"])
            elif item["type"] == "message":
                out += self._text(item["content"][0]["text"], item["id"])
            else:
                out += self.close()
                self.pending = ""
                out += self._call(item)
        return out

    def _text(self, text: str, new_id: str) -> list[Frame]:
        if self.open_kind != "message":
            if not (self.pending + text).strip():
                self.pending += text
                return []
            text, self.pending = self.pending + text, ""
        return self._extend("message", text, new_id)

    def _extend(self, kind: str, text: str, new_id: str) -> list[Frame]:
        """A delta to the open item of this kind, opening one first (after closing another)."""
        out: list[Frame] = []
        if self.open_kind != kind:
            out += self.close()
            out += self._open(kind, new_id)
        self.text += text
        spec = _KINDS[kind]
        out.append(self.event(f"{spec.events}.delta", {**self._where(), "delta": text, **spec.extra}))
        return out

    def _open(self, kind: str, id_: str) -> list[Frame]:
        self.open_id, self.open_kind, self.text = id_, kind, ""
        index = len(self.items)
        spec = _KINDS[kind]
        self.items.append(spec.item(id_, None, "in_progress"))
        return [
            self.event("response.output_item.added", {"output_index": index, "item": self.items[-1]}),
            self.event("response.content_part.added", {**self._where(), "part": spec.part("")}),
        ]

    def _where(self) -> dict[str, Any]:
        return {"item_id": self.open_id, "output_index": len(self.items) - 1, "content_index": 0}

    def close(self) -> list[Frame]:
        if self.open_id is None:
            return []
        spec = _KINDS[self.open_kind]
        where, part = self._where(), spec.part(self.text)
        self.items[-1] = spec.item(self.open_id, self.text, "completed")
        self.open_id, self.open_kind = None, ""
        return [
            self.event(f"{spec.events}.done", {**where, "text": self.text, **spec.extra}),
            self.event("response.content_part.done", {**where, "part": part}),
            self.event("response.output_item.done", {"output_index": where["output_index"], "item": self.items[-1]}),
        ]

    def _call(self, item: dict[str, Any]) -> list[Frame]:
        index = len(self.items)
        self.items.append(item)
        where = {"item_id": item["id"], "output_index": index}
        return [
            self.event(
                "response.output_item.added",
                {"output_index": index, "item": {**item, "status": "in_progress", "arguments": ""}},
            ),
            self.event("response.function_call_arguments.delta", {**where, "delta": item["arguments"]}),
            self.event(
                "response.function_call_arguments.done", {**where, "name": item["name"], "arguments": item["arguments"]}
            ),
            self.event("response.output_item.done", {"output_index": index, "item": item}),
        ]

    def finish(self, called_tools: bool) -> list[Frame]:
        """End of output: held whitespace is the answer only when nothing else was said."""
        out: list[Frame] = []
        if self.pending and not called_tools:
            text, self.pending = self.pending, ""
            out += self._extend("message", text, item_id("msg"))
        return out + self.close()


async def response_events(
    gen: Generation, state: ChoiceState, shape: ResponseShape, on_done: Callable[[dict[str, Any]], None]
) -> AsyncIterator[Frame]:
    """``on_done`` gets the final response object (to store it) before the last event is sent."""
    sequence = 0

    def event(name: str, body: dict[str, Any]) -> Frame:
        nonlocal sequence
        sequence += 1
        return {"data": event_json({"type": name, "sequence_number": sequence - 1, **body})}

    yield event("response.created", {"response": shape.body("in_progress", [])})
    yield event("response.in_progress", {"response": shape.body("in_progress", [])})
    output = _Output(event)
    stream = merged([gen])
    try:
        async for _, chunk in stream:
            for frame in output.add(output_items(state.feed(chunk))):
                yield frame
        for frame in output.finish(bool(state.calls)):
            yield frame
        final = shape.body("completed", output.items, state.usage, state.finish_reason)
        on_done(final)
        yield event(f"response.{final['status']}", {"response": final})
    except Exception as exc:
        log.exception("response stream %s failed after its first token", shape.id)
        info = describe(exc)
        yield event("error", {"code": info.code or info.type, "message": info.message, "param": info.param})
    finally:
        await close_stream(stream)


async def fold_response(gen: Generation, state: ChoiceState, shape: ResponseShape) -> dict[str, Any]:
    stream = merged([gen])
    try:
        async for _, chunk in stream:
            state.feed(chunk)
    finally:
        await close_stream(stream)
    return shape.full(state)
