"""Render a model's own chat template (Jinja, as HF and GGUF ship it) exactly as transformers'
``apply_chat_template`` does: the models were trained on prompts rendered that way.

Same environment (sandboxed, ``trim_blocks``/``lstrip_blocks``, loop controls, the
``{% generation %}`` tag), same globals (``raise_exception``, ``strftime_now``), the same
``tojson`` filter (no key sorting, no HTML escaping, ``indent``/``separators`` options), and the
same variables: ``messages``, ``tools``, ``documents`` (None when absent, never undefined),
``add_generation_prompt``, the special tokens, then the client's ``chat_template_kwargs``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NoReturn

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from backends.chat_format import detect
from backends.errors import BackendStartupError, InvalidRequest
from backends.reasoning import ReasoningSplitter, splitter_for
from backends.tools import openai_tools, template_messages
from backends.types import GenerationRequest, Message, ToolCallConstraint, ToolDef

# Names the renderer itself binds; chat_template_kwargs may not replace them.
RESERVED = frozenset({"messages", "tools", "documents", "add_generation_prompt"})


class _TemplateRefusal(jinja2.TemplateError):
    """``raise_exception()`` from the template: it refuses this conversation shape."""


def _raise(message: str) -> NoReturn:
    raise _TemplateRefusal(message)


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False
) -> str:
    # transformers' override of Jinja's filter, which would sort keys and HTML-escape "<", ">", "&".
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)  # local time, as transformers renders it


class GenerationTag(jinja2.ext.Extension):
    """``{% generation %}…{% endgeneration %}`` marks assistant text for training masks; rendering
    only needs its body (transformers' AssistantTracker, without the tracking)."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Any) -> str:
        return str(caller())


def environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = _strftime_now
    return env


class ChatTemplate:
    """One compiled template; a template that does not compile is a ``BackendStartupError``."""

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "") -> None:
        try:
            self._template = environment().from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            reason = f"line {exc.lineno}: {exc.message}"
            raise BackendStartupError(f"its chat template does not compile ({reason})") from None
        self.source = source
        self._special = {"bos_token": bos_token, "eos_token": eos_token}
        # A template that mentions tools renders them (and tool turns) itself.
        self.native_tools = "tools" in source
        self.format = detect(source)

    def render(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDef] = (),
        tools_required: bool = False,
        add_generation_prompt: bool = True,
        documents: Sequence[Mapping[str, Any]] | None = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> str:
        payload = template_messages(messages, tools, native=self.native_tools, required=tools_required)
        shown = openai_tools(tools) if tools and self.native_tools else None
        return self.render_dicts(payload, shown, add_generation_prompt, documents, kwargs)

    def render_request(self, req: GenerationRequest) -> str:
        """The prompt of a chat request."""
        assert req.messages is not None
        required = isinstance(req.constraint, ToolCallConstraint) and req.constraint.required
        return self.render(
            req.messages,
            tools=req.tools,
            tools_required=required,
            documents=req.documents,
            kwargs=req.template_kwargs,
        )

    def reasoning_splitter(self, req: GenerationRequest, prompt: str) -> ReasoningSplitter | None:
        """A splitter for this request's output, given its rendered ``prompt``."""
        return splitter_for(self.format.reasoning, req, prompt)

    def render_dicts(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        add_generation_prompt: bool,
        documents: Sequence[Mapping[str, Any]] | None = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> str:
        """The template applied to messages already in its dict form (as transformers takes them)."""
        variables: dict[str, Any] = {**self._special, **(kwargs or {})}
        try:
            return self._template.render(
                messages=messages,
                tools=tools,
                documents=None if documents is None else list(documents),
                add_generation_prompt=add_generation_prompt,
                **variables,
            )
        except _TemplateRefusal as exc:
            message = f"the model's chat template rejected the conversation: {exc}"
            raise InvalidRequest(message, param="messages") from None
        except (jinja2.TemplateError, TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
            # A template bug or an input it cannot take (e.g. a kwarg of the wrong type).
            raise InvalidRequest(f"the model's chat template failed: {exc}", param="messages") from None
