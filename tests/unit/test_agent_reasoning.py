"""Reasoning on the Anthropic and Responses routes: thinking blocks and reasoning items in the
request become the turn's reasoning; the model's reasoning comes out as a thinking block / a
reasoning item, streamed and folded alike (closed, unclosed and cut blocks), in the shapes the
official SDKs' types accept."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import anthropic
import pydantic
import pytest
from openai.types.responses import ResponseReasoningItem, ResponseStreamEvent

from backends.chat_format import THINK
from backends.errors import InvalidRequest, UnsupportedParameter
from backends.reasoning import ReasoningSplitter, split_chunk
from backends.types import GenerationChunk, Message, ToolCall, Usage
from server.anthropic.events import _Blocks
from server.anthropic.protocol import MessagesRequest
from server.anthropic.render import MessageRenderer
from server.anthropic.translate import count_request, messages_request, shows_thinking
from server.openai.choices import ChoiceState
from server.responses_api.events import _Output
from server.responses_api.protocol import ResponsesRequest
from server.responses_api.render import ResponseShape, output_items
from server.responses_api.translate import responses_request

# (model output, finish reason) -> (reasoning, answer)
OUTPUTS = {
    ("<think>Adding.</think>\n\nIt is 4.", "stop"): ("Adding.", "It is 4."),
    ("<think>Still thinking, cut by max_to", "length"): ("Still thinking, cut by max_to", ""),
    ("<think>Cut in the close</thi", "length"): ("Cut in the close</thi", ""),
    ("It is 4.", "stop"): ("", "It is 4."),
}
STREAM_EVENTS: Any = pydantic.TypeAdapter(anthropic.types.RawMessageStreamEvent)
RESPONSE_EVENTS: Any = pydantic.TypeAdapter(ResponseStreamEvent)


def _chunks(out: str, finish: str, size: int = 3) -> list[GenerationChunk]:
    """An engine's chunks of ``out``, split as the backends split them."""
    splitter = ReasoningSplitter(THINK)
    raw = [GenerationChunk(text=out[i : i + size], tokens=1) for i in range(0, len(out), size)]
    raw[-1] = replace(raw[-1], finish_reason=finish, usage=Usage(5, len(raw)))  # type: ignore[arg-type]
    return [split_chunk(splitter, c) for c in raw]


def _anthropic_stream(chunks: list[GenerationChunk]) -> tuple[list[dict[str, Any]], ChoiceState]:
    blocks, state = _Blocks(), ChoiceState(0)
    events = [e for c in chunks for e in blocks.events(state.feed(c))] + blocks.finish(called_tools=False)
    return [json.loads(e["data"]) for e in events], state


def _accumulate(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = []
    for e in events:
        if e["type"] == "content_block_start":
            assert e["index"] == len(content)
            content.append(dict(e["content_block"]))
        elif e["type"] == "content_block_delta":
            block, delta = content[e["index"]], e["delta"]
            key = {"thinking_delta": "thinking", "text_delta": "text", "signature_delta": "signature"}[delta["type"]]
            block[key] = delta[key] if key == "signature" else block[key] + delta[key]
    return content


@pytest.mark.parametrize(("out", "finish"), list(OUTPUTS))
def test_thinking_blocks_streamed_and_folded(out: str, finish: str) -> None:
    reasoning, answer = OUTPUTS[(out, finish)]
    events, state = _anthropic_stream(_chunks(out, finish))
    for e in events:
        STREAM_EVENTS.validate_python(e)
    folded = MessageRenderer("msg_1", "m").full(state, None)
    expected = ([{"type": "thinking", "thinking": reasoning, "signature": ""}] if reasoning else []) + (
        [{"type": "text", "text": answer}] if answer else []
    )
    assert folded["content"] == expected == _accumulate(events)
    anthropic.types.Message.model_validate(folded)
    kinds = [(e["type"], e.get("delta", {}).get("type")) for e in events]
    if reasoning:  # the thinking block: its deltas, its signature last, then it closes
        first_stop = kinds.index(("content_block_stop", None))
        assert kinds[first_stop - 1] == ("content_block_delta", "signature_delta")


def test_omitted_thinking_and_thinking_switches() -> None:
    def req(**fields: Any) -> MessagesRequest:
        return MessagesRequest.model_validate(
            {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], **fields}
        )

    assert messages_request(req(), "r").template_kwargs == {}
    enabled = req(thinking={"type": "enabled", "budget_tokens": 2048}, output_config={"effort": "low"})
    assert messages_request(enabled, "r").template_kwargs == {"enable_thinking": True, "reasoning_effort": "low"}
    disabled = req(thinking={"type": "disabled"})
    assert messages_request(disabled, "r").template_kwargs == {"enable_thinking": False}
    assert count_request(disabled).template_kwargs == {"enable_thinking": False}
    assert messages_request(req(thinking={"type": "adaptive"}), "r").template_kwargs == {}
    assert shows_thinking(enabled) and not shows_thinking(req(thinking={"type": "enabled", "display": "omitted"}))


def test_thinking_blocks_in_history_are_the_turns_reasoning() -> None:
    thought = {"type": "thinking", "thinking": "Use f.", "signature": "sig"}
    call = {"type": "tool_use", "id": "t1", "name": "f", "input": {}}
    hidden = {"type": "redacted_thinking", "data": "opaque"}
    req = MessagesRequest.model_validate(
        {
            "model": "m",
            "max_tokens": 5,
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [hidden, thought, call]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]},
            ],
        }
    )
    assert messages_request(req, "r").messages[1] == Message(
        "assistant", "", tool_calls=(ToolCall("t1", "f", "{}"),), reasoning="Use f."
    )
    misplaced = req.model_copy(update={"messages": [req.messages[1].model_copy(update={"role": "user"})]})
    with pytest.raises(InvalidRequest, match="redacted_thinking blocks belong in assistant messages"):
        messages_request(misplaced, "r")


def _response_items(chunks: list[GenerationChunk], req: ResponsesRequest) -> tuple[list[Any], dict[str, Any]]:
    events: list[dict[str, Any]] = []

    def event(name: str, body: dict[str, Any]) -> dict[str, str]:
        events.append({"type": name, "sequence_number": len(events), **body})
        return {"data": json.dumps(events[-1])}

    output, state = _Output(event), ChoiceState(0)
    for c in chunks:
        output.add(output_items(state.feed(c)))
    output.finish(called_tools=False)
    for e in events:
        RESPONSE_EVENTS.validate_python(e)
    return events, ResponseShape("resp_1", req).full(state)


@pytest.mark.parametrize(("out", "finish"), list(OUTPUTS))
def test_reasoning_items_streamed_and_folded(out: str, finish: str) -> None:
    reasoning, answer = OUTPUTS[(out, finish)]
    req = ResponsesRequest.model_validate({"model": "m", "input": "x"})
    events, folded = _response_items(_chunks(out, finish), req)
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert [{**i, "id": ""} for i in done] == [{**i, "id": ""} for i in folded["output"]]
    assert [i["type"] for i in done] == (["reasoning"] if reasoning else []) + (["message"] if answer else [])
    if reasoning:
        item = ResponseReasoningItem.model_validate(done[0])
        assert item.content is not None and item.content[0].text == reasoning and item.summary == []
        deltas = "".join(e["delta"] for e in events if e["type"] == "response.reasoning_text.delta")
        assert deltas == reasoning == next(e["text"] for e in events if e["type"] == "response.reasoning_text.done")
    assert (folded["usage"]["output_tokens_details"]["reasoning_tokens"] > 0) is bool(reasoning)


def test_reasoning_items_in_input_and_reasoning_params() -> None:
    item = {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "Hm."}]}
    sealed = {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": "gAAA"}
    answer = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "4"}]}
    call = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}
    req = ResponsesRequest.model_validate(
        {
            "model": "m",
            "input": [{"role": "user", "content": "2+2?"}, item, answer, sealed, call],
            "reasoning": {"effort": "none", "summary": "auto"},
            "include": ["reasoning.encrypted_content"],
        }
    )
    out = responses_request(req, "r", ())
    assert out.history == (
        Message("user", "2+2?"),
        Message("assistant", "4", reasoning="Hm."),
        Message("assistant", "", tool_calls=(ToolCall("c1", "f", "{}"),)),
    )
    assert out.request.template_kwargs == {"enable_thinking": False}
    assert ResponseShape("resp_1", req).body("completed", [])["reasoning"] == {"effort": "none", "summary": "auto"}
    other = req.model_copy(update={"include": ["message.output_text.logprobs"]})
    with pytest.raises(UnsupportedParameter, match="include"):
        responses_request(other, "r", ())
