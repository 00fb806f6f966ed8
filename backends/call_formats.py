"""Each model family's own tool-call syntax, as data: one ``CallFormat`` describes how the
family writes calls, and from it come the grammar that constrains generation (llama.cpp GBNF,
vLLM structural tags) and the parser that reads calls back (``backends.call_parser``).

Three shapes cover the families:
- "object": a JSON object holding the name and the arguments (Llama 3.x, Mistral Nemo, Granite),
- "named": the function name, a separator, then the arguments as JSON (Mistral Small 3.2,
  DeepSeek R1/V3.1, Functionary v3.1, gpt-oss),
- "xml": the name, then one ``<parameter=KEY>`` element per argument (Qwen3-Coder).
Hermes (``<tool_call>{"name": ..., "arguments": ...}</tool_call>``) keeps its own parser and
grammar in ``backends.tools``; it is also the form of every family no rule recognises.
"""

from __future__ import annotations

import dataclasses
import random
import string
from dataclasses import dataclass
from typing import Literal

from backends import tools as tl
from backends.types import Constraint, ToolCallConstraint

_DS = "\uff5c"  # DeepSeek's markers use FULLWIDTH VERTICAL LINE and LOWER ONE EIGHTH BLOCK
_SP = "\u2581"


def _ds(name: str) -> str:
    return f"<{_DS}{name.replace(' ', _SP)}{_DS}>"


@dataclass(frozen=True, slots=True)
class CallFormat:
    name: str
    shape: Literal["hermes", "object", "named", "xml"]
    call_open: str  # before each call (named/xml: right before the function name)
    call_close: str  # after each call's arguments
    name_sep: str = ""  # named/xml: between the function name and the arguments
    args_key: str = "arguments"  # object: the key holding the arguments
    block_open: str = ""  # once, before the first call
    block_close: str = ""  # once, after the last call
    separator: str = ""  # between two calls
    parallel: bool = True  # the family can write several calls in one turn
    short_ids: bool = False  # its templates insist on 9-character alphanumeric call ids (Mistral)
    id_sep: str = ""  # named: an optional call id may follow the name after this marker

    @property
    def trigger(self) -> str:
        """The text that starts the call section (free text before it is content)."""
        if self.block_open:
            return self.block_open
        if self.shape == "object" and not self.call_open:
            return '{"name"'
        return self.call_open

    def example(self, name: str = "NAME", args: str = '{"ARG": "VALUE"}') -> str:
        """One call written the family's way (docs, tests)."""
        if self.shape == "hermes":
            body = f'{self.call_open}{{"name": "{name}", "arguments": {args}}}{self.call_close}'
        elif self.shape == "object":
            body = f'{self.call_open}{{"name": "{name}", "{self.args_key}": {args}}}{self.call_close}'
        elif self.shape == "named":
            body = f"{self.call_open}{name}{self.name_sep}{args}{self.call_close}"
        else:
            body = f"{self.call_open}{name}{self.name_sep}<parameter=ARG>\nVALUE\n</parameter>\n{self.call_close}"
        return f"{self.block_open}{body}{self.block_close}"

    def new_id(self) -> str:
        if self.short_ids:
            return "".join(random.choices(string.ascii_letters + string.digits, k=9))
        return tl.new_call_id()


FORMATS: dict[str, CallFormat] = {
    f.name: f
    for f in (
        CallFormat("hermes", "hermes", f"{tl.OPEN}\n", f"\n{tl.CLOSE}", separator="\n"),
        CallFormat("llama3_json", "object", "", "", args_key="parameters", parallel=False),
        CallFormat(
            "mistral_nemo",
            "object",
            "",
            "",
            block_open="[TOOL_CALLS][",
            block_close="]",
            separator=", ",
            short_ids=True,
        ),
        CallFormat("mistral", "named", "[TOOL_CALLS]", "", name_sep="[ARGS]", short_ids=True, id_sep="[CALL_ID]"),
        CallFormat(
            "deepseek_r1",
            "named",
            _ds("tool call begin") + "function" + _ds("tool sep"),
            "\n```" + _ds("tool call end"),
            name_sep="\n```json\n",
            block_open=_ds("tool calls begin"),
            block_close=_ds("tool calls end"),
            separator="\n",
        ),
        CallFormat(
            "deepseek_v3_1",
            "named",
            _ds("tool call begin"),
            _ds("tool call end"),
            name_sep=_ds("tool sep"),
            block_open=_ds("tool calls begin"),
            block_close=_ds("tool calls end"),
        ),
        CallFormat("granite", "object", "", "", block_open="<|tool_call|>[", block_close="]", separator=", "),
        CallFormat("functionary_v3_1", "named", "<function=", "</function>", name_sep=">"),
        CallFormat(
            "harmony",
            "named",
            "<|channel|>commentary to=functions.",
            "<|call|>",
            name_sep=" <|constrain|>json<|message|>",
            parallel=False,
        ),
        CallFormat(
            "qwen3_coder",
            "xml",
            "<tool_call>\n<function=",
            "</function>\n</tool_call>",
            name_sep=">\n",
            separator="\n",
        ),
    )
}


def call_format(name: str) -> CallFormat:
    """The family's format; Hermes for a family whose own syntax is not implemented here."""
    return FORMATS.get(name, FORMATS["hermes"])


def in_format(constraint: Constraint | None, fmt: CallFormat) -> Constraint | None:
    """A tool-call constraint set to the family's syntax (other constraints unchanged)."""
    if isinstance(constraint, ToolCallConstraint):
        return dataclasses.replace(constraint, format=fmt.name)
    return constraint
