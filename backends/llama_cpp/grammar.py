"""Output constraints as llama.cpp GBNF grammars (built once per request, on the event loop)."""

from __future__ import annotations

import ctypes
import json
import re
from dataclasses import dataclass
from typing import Any

import llama_cpp as lc
from llama_cpp.llama_grammar import json_schema_to_gbnf

from backends import tools as tl
from backends.errors import InvalidRequest
from backends.types import Constraint, GrammarConstraint, JsonConstraint, ToolCallConstraint

# Lazy grammars (tool_choice "auto") wait for this pattern, matched from the start of the output;
# the grammar then sees the text from the first group on, i.e. from the opening tag.
_TRIGGER = r"[\s\S]*?(" + re.escape(tl.OPEN) + r")[\s\S]*"


@dataclass(frozen=True, slots=True)
class Grammar:
    text: str
    lazy: bool  # True: free text until the trigger, grammar from there on
    client: bool = False  # the client wrote it (errors name its "grammar" field)


# llama-cpp-python's converter lets raw control characters into strings, which JSON forbids
# (llama.cpp's own converter has since excluded them): a model could write an unparseable newline.
_LOOSE_CHAR = r'char ::= [^"\\]'
_JSON_CHAR = r'char ::= [^"\\\x7F\x00-\x1F]'


# The converter writes a bound like maxLength: n as n nested optional rules, so a client's
# maxLength of 10**9 would build gigabytes of grammar text; far above any real output anyway.
MAX_REPEAT_BOUND = 10_000
_BOUNDS = ("maxLength", "minLength", "maxItems", "minItems", "maxProperties", "minProperties")


def _check_bounds(node: Any, param: str) -> None:
    if isinstance(node, dict):
        for key in _BOUNDS:
            value = node.get(key)
            if isinstance(value, int) and value > MAX_REPEAT_BOUND:
                raise InvalidRequest(
                    f"the JSON schema's {key} of {value} is above the {MAX_REPEAT_BOUND} this server enforces",
                    param=param,
                )
        for child in node.values():
            _check_bounds(child, param)
    elif isinstance(node, list):
        for child in node:
            _check_bounds(child, param)


def _schema_rules(schema: dict[str, Any], *, param: str) -> str:
    _check_bounds(schema, param)
    try:
        rules = str(json_schema_to_gbnf(json.dumps(schema)))
    except Exception as exc:  # the converter raises bare Exceptions/KeyErrors on what it cannot express
        raise InvalidRequest(f"the JSON schema cannot be enforced: {exc!r}", param=param) from None
    return rules.replace(_LOOSE_CHAR, _JSON_CHAR)


def build(constraint: Constraint) -> Grammar:
    if isinstance(constraint, GrammarConstraint):
        return Grammar(constraint.gbnf, lazy=False, client=True)
    if isinstance(constraint, JsonConstraint):
        schema = constraint.schema if constraint.schema is not None else {"type": "object"}
        return Grammar(_schema_rules(schema, param="response_format"), lazy=False)
    return _tool_grammar(constraint)


def _tool_grammar(c: ToolCallConstraint) -> Grammar:
    # The converter names its top rule "root"; rename it so our own root can wrap it in the tags.
    rules = _schema_rules(tl.call_schema(c.tools), param="tools")
    rules = re.sub(r"^root ::=", "tool-call-json ::=", rules, flags=re.MULTILINE)
    call = f'"{_gbnf_escape(tl.OPEN)}\\n" tool-call-json "\\n{_gbnf_escape(tl.CLOSE)}"'
    root = 'root ::= tool-call ("\\n" tool-call)*\n' if c.parallel else "root ::= tool-call\n"
    return Grammar(f"{root}tool-call ::= {call}\n{rules}", lazy=not c.required)


def _gbnf_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def sampler(grammar: Grammar, vocab: Any) -> Any:
    """A native grammar sampler (caller owns it); InvalidRequest if llama.cpp rejects the grammar."""
    text = grammar.text.encode()
    if grammar.lazy:
        patterns = (ctypes.c_char_p * 1)(_TRIGGER.encode())
        smpl = lc.llama_sampler_init_grammar_lazy_patterns(vocab, text, b"root", patterns, 1, None, 0)
    else:
        smpl = lc.llama_sampler_init_grammar(vocab, text, b"root")
    if not smpl:
        param = "grammar" if grammar.client else "response_format"
        raise InvalidRequest("the output constraint could not be compiled into a grammar", param=param)
    return smpl
