"""The Responses API's typed stream events, in OpenAI's order, from one started generation:

``response.created``, ``response.in_progress``; per output item ``response.output_item.added``,
then for a message ``response.content_part.added``, ``response.output_text.delta`` ...,
``response.output_text.done``, ``response.content_part.done``, or for a function call
``response.function_call_arguments.delta`` and ``.done``; then ``response.output_item.done``;
last ``response.completed`` (``response.incomplete`` when max_output_tokens cut it short). Every
event carries a ``sequence_number``. A failure after the 200 is an ``error`` event.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from server.http.errors import describe
from server.openai.choices import ChoiceState
from server.openai.streaming import Generation, close_stream, merged
from server.responses_api.render import ResponseShape, item_id, message_item, output_items, text_part

log = logging.getLogger(__name__)

Frame = dict[str, str]


class _Output:
    """The output so far and the message item still open. Text extends the open message; a function
    call closes it and is sent whole. Whitespace-only text waits for real text, so the newline a
    model writes before a call never becomes a message of its own."""

    def __init__(self, event: Callable[[str, dict[str, Any]], Frame]) -> None:
        self.event = event
        self.items: list[dict[str, Any]] = []
        self.open_id: str | None = None
        self.text = ""
        self.pending = ""

    def add(self, items: list[dict[str, Any]]) -> list[Frame]:
        out: list[Frame] = []
        for item in items:
            if item["type"] == "message":
                out += self._text(item["content"][0]["text"], item["id"])
            else:
                out += self.close()
                self.pending = ""
                out += self._call(item)
        return out

    def _text(self, text: str, new_id: str) -> list[Frame]:
        out: list[Frame] = []
        if self.open_id is None:
            if not (self.pending + text).strip():
                self.pending += text
                return out
            text, self.pending = self.pending + text, ""
            out += self._open(new_id)
        self.text += text
        out.append(self.event("response.output_text.delta", {**self._where(), "delta": text, "logprobs": []}))
        return out

    def _open(self, id_: str) -> list[Frame]:
        self.open_id, self.text = id_, ""
        index = len(self.items)
        self.items.append(message_item(id_, None, "in_progress"))
        return [
            self.event("response.output_item.added", {"output_index": index, "item": self.items[-1]}),
            self.event("response.content_part.added", {**self._where(), "part": text_part("")}),
        ]

    def _where(self) -> dict[str, Any]:
        return {"item_id": self.open_id, "output_index": len(self.items) - 1, "content_index": 0}

    def close(self) -> list[Frame]:
        if self.open_id is None:
            return []
        where, part = self._where(), text_part(self.text)
        self.items[-1] = message_item(self.open_id, self.text)
        self.open_id = None
        return [
            self.event("response.output_text.done", {**where, "text": self.text, "logprobs": []}),
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
            out += self._open(item_id("msg"))
            self.text = text
            out.append(self.event("response.output_text.delta", {**self._where(), "delta": text, "logprobs": []}))
        return out + self.close()


async def response_events(
    gen: Generation, state: ChoiceState, shape: ResponseShape, on_done: Callable[[dict[str, Any]], None]
) -> AsyncIterator[Frame]:
    """``on_done`` gets the final response object (to store it) before the last event is sent."""
    sequence = 0

    def event(name: str, body: dict[str, Any]) -> Frame:
        nonlocal sequence
        sequence += 1
        return {"data": json.dumps({"type": name, "sequence_number": sequence - 1, **body}, ensure_ascii=False)}

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
