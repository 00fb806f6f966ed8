"""Render a model's own chat template (Jinja, as HF and GGUF ship it) in a sandbox."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, NoReturn

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from backends.errors import InvalidRequest
from backends.tools import openai_tools, template_messages
from backends.types import Message, ToolDef


def _raise(message: str) -> NoReturn:
    # Templates call raise_exception() to refuse a conversation shape (e.g. roles out of order).
    raise InvalidRequest(f"the model's chat template rejected the conversation: {message}", param="messages")


class ChatTemplate:
    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "") -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now(timezone.utc).strftime(fmt)
        self._template = env.from_string(source)
        self._bos = bos_token
        self._eos = eos_token
        # A template that mentions tools renders them (and tool turns) itself.
        self.native_tools = "tools" in source

    def render(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDef] = (),
        tools_required: bool = False,
        add_generation_prompt: bool = True,
    ) -> str:
        payload = template_messages(messages, tools, native=self.native_tools, required=tools_required)
        extra: dict[str, Any] = {"tools": openai_tools(tools)} if tools and self.native_tools else {}
        try:
            return self._template.render(
                messages=payload,
                add_generation_prompt=add_generation_prompt,
                bos_token=self._bos,
                eos_token=self._eos,
                **extra,
            )
        except jinja2.TemplateError as exc:
            raise InvalidRequest(f"the model's chat template failed: {exc}", param="messages") from None
