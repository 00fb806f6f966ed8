"""Tool calling, engine-neutral: how tools reach the prompt and how calls come back out.

Calls travel in the Hermes form (``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``)
that Qwen, Hermes and many other tool-trained templates use. Every backend constrains its output
to that form (llama.cpp grammar, vLLM structured outputs), so one parser serves them all.

A template that knows tools (its source mentions ``tools``) gets them natively; for any other
template (SmolLM2's included) the tool list goes into the system message as a preamble and the
conversation's tool turns are rewritten as plain text the template can render.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from backends.errors import InvalidRequest, UnsupportedParameter
from backends.reasoning import reasoning_fields
from backends.textstream import partial_suffix
from backends.types import Constraint, GrammarConstraint, JsonConstraint, Message, ToolCall, ToolCallConstraint, ToolDef

OPEN = "<tool_call>"
CLOSE = "</tool_call>"


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def openai_tools(tools: Sequence[ToolDef]) -> list[dict[str, Any]]:
    """Tools as OpenAI (and HF chat templates) describe them."""
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in tools
    ]


def choose_tools(
    defs: Sequence[ToolDef], choice: str | None, *, parallel: bool = True, param: str = "tool_choice"
) -> tuple[tuple[ToolDef, ...], ToolCallConstraint | None]:
    """The tools the prompt shows and the output constraint, for every API's tool choice.

    ``choice``: "none" (the model will not call, so it need not see the tools), "auto" or None
    (it may), "required" (it must call one), or any other text: the name of the one function it
    must call. Each API maps its own spelling (Anthropic's "any", a named object) onto these.
    """
    names = [d.name for d in defs]
    if not defs:
        if choice is not None and choice != "none":
            raise InvalidRequest("tool_choice is only allowed when tools are given.", param=param)
        return (), None
    if len(set(names)) != len(names):
        raise InvalidRequest("tools must have distinct function names.", param="tools")
    if choice == "none":
        return (), None
    if choice in (None, "auto", "required"):
        return tuple(defs), ToolCallConstraint(tuple(defs), required=choice == "required", parallel=parallel)
    chosen = tuple(d for d in defs if d.name == choice)
    if not chosen:
        raise InvalidRequest(
            f"tool_choice names function {choice!r}, which is not among the tools ({', '.join(names)}).", param=param
        )
    return tuple(defs), ToolCallConstraint(chosen, required=True, parallel=False)


def tools_or_format(
    defs: Sequence[ToolDef],
    choice: str | None,
    json: JsonConstraint | GrammarConstraint | None,
    *,
    parallel: bool = True,
    format_param: str = "response_format",
) -> tuple[tuple[ToolDef, ...], Constraint | None]:
    """``choose_tools`` plus a JSON output format (``format_param`` is where the API puts it): one
    constraint at a time, so a format and tools that may be called exclude each other."""
    tools, constraint = choose_tools(defs, choice, parallel=parallel)
    if constraint is None:
        return tools, json
    if json is not None:
        raise UnsupportedParameter(
            f"{format_param} cannot be combined with tools that may be called; use tool_choice 'none' or drop one.",
            param=format_param,
        )
    return tools, constraint


def call_schema(tools: Sequence[ToolDef]) -> dict[str, Any]:
    """JSON schema of one call object: a known function's name and arguments valid for it."""
    options = [
        {
            "type": "object",
            "properties": {"name": {"const": t.name}, "arguments": t.parameters or {"type": "object"}},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in tools
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}


def preamble(tools: Sequence[ToolDef], *, required: bool) -> str:
    """System-prompt text that tells a model without a tool-aware template how to call."""
    listing = "\n".join(json.dumps(t, ensure_ascii=False) for t in openai_tools(tools))
    must = "You must call one of these functions." if required else "Call a function only when it helps."
    return (
        "You can call functions. Their signatures, as JSON schemas, are inside <tools></tools>:\n"
        f"<tools>\n{listing}\n</tools>\n{must} To call one, answer with a JSON object holding its name "
        f'and arguments inside <tool_call></tool_call> tags:\n{OPEN}\n{{"name": <function-name>, '
        f'"arguments": <args-json-object>}}\n{CLOSE}'
    )


def call_text(call: ToolCall) -> str:
    try:
        arguments: Any = json.loads(call.arguments)
    except ValueError:
        arguments = call.arguments
    return f"{OPEN}\n{json.dumps({'name': call.name, 'arguments': arguments}, ensure_ascii=False)}\n{CLOSE}"


def template_messages(
    messages: Sequence[Message], tools: Sequence[ToolDef], *, native: bool, required: bool = False
) -> list[dict[str, Any]]:
    """Messages as chat-template dicts.

    ``native``: the template renders tools, tool calls and tool results itself. Otherwise tool
    turns become text: an assistant's calls in Hermes tags, tool results as a user turn in
    ``<tool_response>`` tags (many templates refuse a "tool" role or enforce user/assistant
    alternation; consecutive results share one turn).
    """
    if native:
        return [_native_dict(m) for m in messages]
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            text = f"<tool_response>\n{m.content}\n</tool_response>"
            if out and out[-1].get("_tool_results"):
                out[-1]["content"] += "\n" + text
            else:
                out.append({"role": "user", "content": text, "_tool_results": True})
            continue
        content = m.content
        if m.tool_calls:
            content = "\n".join(filter(None, [content, *(call_text(c) for c in m.tool_calls)]))
        entry: dict[str, Any] = {"role": m.role, "content": content}
        if m.reasoning is not None:
            entry.update(reasoning_fields(m.reasoning))
        if m.name is not None:
            entry["name"] = m.name
        out.append(entry)
    for entry in out:
        entry.pop("_tool_results", None)
    if tools:
        text = preamble(tools, required=required)
        if out and out[0]["role"] == "system":
            out[0]["content"] = f"{out[0]['content']}\n\n{text}"
        else:
            out.insert(0, {"role": "system", "content": text})
    return out


def _native_dict(m: Message) -> dict[str, Any]:
    # Content stays a string (empty beside tool calls): many templates test ``'x' in content``.
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.reasoning is not None:
        out.update(reasoning_fields(m.reasoning))
    if m.name is not None:
        out["name"] = m.name
    if m.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": loads_or_text(c.arguments)}}
            for c in m.tool_calls
        ]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    return out


def loads_or_text(text: str) -> Any:
    # HF templates expect arguments as a mapping (they json-dump it themselves).
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_call(body: str, known: frozenset[str]) -> ToolCall | None:
    """One ``<tool_call>`` body as a call; None if it is not a JSON call of a known function."""
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get("name") not in known:
        return None
    arguments = obj.get("arguments", {})
    if isinstance(arguments, str):  # some models double-encode; OpenAI carries a JSON text
        arguments = loads_or_text(arguments)
    return ToolCall(new_call_id(), str(obj["name"]), json.dumps(arguments, ensure_ascii=False))


@dataclass(slots=True)
class ToolCallParser:
    """Splits a streamed completion into content text and tool calls.

    Text that might be the start of ``<tool_call>`` is held back until it is decided, so no
    tag fragment ever reaches the client as content. A call is emitted once its closing tag
    (or the end of the output) arrives.
    """

    known: frozenset[str]
    _buffer: str = ""
    _in_call: bool = False
    calls: list[ToolCall] = field(default_factory=list)

    def feed(self, text: str) -> tuple[str, list[ToolCall]]:
        self._buffer += text
        content: list[str] = []
        new: list[ToolCall] = []
        while True:
            if self._in_call:
                end = self._buffer.find(CLOSE)
                if end < 0:
                    break
                call = parse_call(self._buffer[:end].strip(), self.known)
                if call is None:  # not a valid call: show it as it was written
                    content.append(f"{OPEN}{self._buffer[: end + len(CLOSE)]}")
                else:
                    new.append(call)
                    self.calls.append(call)
                self._buffer = self._buffer[end + len(CLOSE) :]
                self._in_call = False
                continue
            start = self._buffer.find(OPEN)
            if start >= 0:
                content.append(self._between_calls(self._buffer[:start]))
                self._buffer = self._buffer[start + len(OPEN) :]
                self._in_call = True
                continue
            keep = partial_suffix(self._buffer, OPEN)
            content.append(self._between_calls(self._buffer[: len(self._buffer) - keep]))
            self._buffer = self._buffer[len(self._buffer) - keep :]
            break
        return "".join(content), new

    def _between_calls(self, text: str) -> str:
        # The newlines a model puts between (or after) its calls are not content.
        return "" if self.calls and not text.strip() else text

    def finish(self) -> tuple[str, list[ToolCall]]:
        """End of output: an unclosed call is still a call if its JSON is complete."""
        rest, self._buffer = self._buffer, ""
        if not self._in_call:
            return self._between_calls(rest), []
        self._in_call = False
        call = parse_call(rest.strip(), self.known)
        if call is None:
            return f"{OPEN}{rest}", []
        self.calls.append(call)
        return "", [call]
