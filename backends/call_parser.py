"""Reads a family's tool calls back out of streamed output (``backends.call_formats`` describes
the syntax). Text before the call section is content, released as it arrives except what may be
the start of the section's trigger; a call is emitted once it is complete. A section that turns
out not to be valid calls (an unknown function, broken JSON) is shown as the text it was."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from backends import tools as tl
from backends.call_formats import CallFormat
from backends.textstream import partial_suffix
from backends.types import ToolCall, ToolDef

_DECODER = json.JSONDecoder()
_PARAM = re.compile(r"<parameter=([^>\n]+)>\n?(.*?)\n?</parameter>", re.DOTALL)


class _NeedMore(Exception):
    """The section so far is a valid beginning: wait for more text."""


class _Invalid(Exception):
    """The section is not calls of this format."""


@dataclass(slots=True)
class FormatCallParser:
    fmt: CallFormat
    known: frozenset[str]
    schemas: dict[str, dict[str, Any]]
    _buffer: str = ""
    _state: str = "content"  # "content" or "section" (inside calls)
    _opened: bool = False  # the block_open has been read
    calls: list[ToolCall] = field(default_factory=list)

    def feed(self, text: str) -> tuple[str, list[ToolCall]]:
        return self._run(text, final=False)

    def finish(self) -> tuple[str, list[ToolCall]]:
        return self._run("", final=True)

    def _run(self, text: str, *, final: bool) -> tuple[str, list[ToolCall]]:
        self._buffer += text
        content: list[str] = []
        new: list[ToolCall] = []
        while self._buffer:
            if self._state == "content":
                at = self._buffer.find(self.fmt.trigger)
                if at < 0:
                    keep = 0 if final else partial_suffix(self._buffer, self.fmt.trigger)
                    content.append(self._between(self._buffer[: len(self._buffer) - keep]))
                    self._buffer = self._buffer[len(self._buffer) - keep :]
                    break
                content.append(self._between(self._buffer[:at]))
                self._buffer, self._state, self._opened = self._buffer[at:], "section", False
            else:
                try:
                    call, used = self._one(self._buffer, final)
                except _NeedMore:
                    break
                except _Invalid:
                    # Not a call (e.g. an example in prose): show the trigger as text, look further.
                    content.append(self._buffer[: len(self.fmt.trigger)])
                    self._buffer, self._state = self._buffer[len(self.fmt.trigger) :], "content"
                    continue
                self._buffer = self._buffer[used:]
                if call is None:  # the section is over: what follows is content again
                    self._state = "content"
                else:
                    new.append(call)
                    self.calls.append(call)
        if final and self._state == "section" and self._buffer:
            content.append(self._buffer)  # an unfinished section that never became a call
            self._buffer = ""
        return "".join(content), new

    def _between(self, text: str) -> str:
        # The whitespace a model writes between (or after) its calls is not content.
        return "" if self.calls and not text.strip() else text

    def _one(self, buf: str, final: bool) -> tuple[ToolCall | None, int]:
        """One step through the section: (a call, characters used) or (None, used) at its end."""
        f = self.fmt
        if f.block_open and not self._opened:
            result = self._one_call(buf, _expect(buf, 0, f.block_open, final), final, first=True)
            self._opened = True
            return result
        return self._one_call(buf, 0, final, first=not self.calls)

    def _one_call(self, buf: str, pos: int, final: bool, *, first: bool) -> tuple[ToolCall | None, int]:
        f = self.fmt
        start = pos
        if not first:
            rest = buf[pos:].lstrip()
            pos = len(buf) - len(rest)
            if f.block_close and rest.startswith(f.block_close):
                return None, pos + len(f.block_close)
            sep = f.separator.strip()
            opener = sep or f.call_open or f.trigger
            if rest.startswith(opener):
                pos += len(sep)
            elif not rest or _is_prefix(rest, opener) or _is_prefix(rest, f.block_close):
                if final:
                    return None, len(buf)
                raise _NeedMore
            else:  # text after the calls: content again
                return None, start
        pos = _skip_ws(buf, pos, bool(f.call_open.strip()) or f.shape == "object")
        if f.shape == "object":
            return self._object_call(buf, _expect(buf, pos, f.call_open, final), final)
        return self._named_call(buf, _expect(buf, pos, f.call_open, final), final)

    def _object_call(self, buf: str, pos: int, final: bool) -> tuple[ToolCall, int]:
        obj, pos = _json(buf, pos, final)
        if not isinstance(obj, dict) or obj.get("name") not in self.known:
            raise _Invalid
        args = obj.get(self.fmt.args_key, obj.get("arguments", {}))
        return self._call(str(obj["name"]), args), _close(buf, pos, self.fmt.call_close, final)

    def _named_call(self, buf: str, pos: int, final: bool) -> tuple[ToolCall, int]:
        f = self.fmt
        sep = buf.find(f.name_sep, pos)
        if sep < 0:
            if final or not any(n.startswith(buf[pos:]) or buf[pos:].startswith(n) for n in self.known):
                raise _Invalid
            raise _NeedMore
        name = buf[pos:sep].strip()
        if f.id_sep and f.id_sep in name:  # Mistral may write the call's id after its name
            name = name.split(f.id_sep, 1)[0]
        if name not in self.known:
            raise _Invalid
        pos = sep + len(f.name_sep)
        if f.shape == "xml":
            end = buf.find(f.call_close, pos)
            if end < 0:  # an unfinished call (cut by max_tokens) is not a call
                raise _Invalid if final else _NeedMore
            return self._call(name, self._xml_args(name, buf[pos:end])), end + len(f.call_close)
        args, pos = _json(buf, _skip_ws(buf, pos, True), final)
        return self._call(name, args), _close(buf, pos, f.call_close, final)

    def _xml_args(self, name: str, body: str) -> dict[str, Any]:
        props = self.schemas.get(name, {}).get("properties", {})
        out: dict[str, Any] = {}
        for key, raw in _PARAM.findall(body):
            kind = props.get(key, {}).get("type", "string") if isinstance(props.get(key), dict) else "string"
            if kind == "string":
                out[key] = raw
                continue
            try:
                out[key] = json.loads(raw)
            except ValueError:
                out[key] = raw
        return out

    def _call(self, name: str, args: Any) -> ToolCall:
        if isinstance(args, str):  # some models double-encode; OpenAI carries a JSON text
            args = tl.loads_or_text(args)
        return ToolCall(self.fmt.new_id(), name, json.dumps(args, ensure_ascii=False))


def _is_prefix(text: str, tag: str) -> bool:
    return bool(tag) and tag.startswith(text)


def _skip_ws(buf: str, pos: int, skip: bool) -> int:
    if not skip:
        return pos
    while pos < len(buf) and buf[pos].isspace():
        pos += 1
    return pos


def _expect(buf: str, pos: int, tag: str, final: bool) -> int:
    if buf.startswith(tag, pos):
        return pos + len(tag)
    if not final and tag.startswith(buf[pos:]):
        raise _NeedMore
    raise _Invalid


def _json(buf: str, pos: int, final: bool) -> tuple[Any, int]:
    try:
        return _DECODER.raw_decode(buf, pos)
    except ValueError:
        if final:
            raise _Invalid from None
        raise _NeedMore from None


def _close(buf: str, pos: int, tag: str, final: bool) -> int:
    """Past the call's closing text; at the very end it may be missing (the engine stopped on it)."""
    tag = tag.lstrip()  # whitespace around the arguments is the model's choice
    if not tag:
        return pos
    at = _skip_ws(buf, pos, True)
    if buf.startswith(tag, at):
        return at + len(tag)
    if tag.startswith(buf[at:]):
        if final:
            return len(buf)
        raise _NeedMore
    raise _Invalid


class CallParser(Protocol):
    calls: list[ToolCall]

    def feed(self, text: str) -> tuple[str, list[ToolCall]]: ...

    def finish(self) -> tuple[str, list[ToolCall]]: ...


def call_parser(fmt: CallFormat, tools: Sequence[ToolDef]) -> CallParser:
    """A parser for one choice's output, in the family's format, knowing the offered tools."""
    known = frozenset(t.name for t in tools)
    if fmt.shape == "hermes":
        return tl.ToolCallParser(known)
    return FormatCallParser(fmt, known, {t.name: t.parameters for t in tools})
