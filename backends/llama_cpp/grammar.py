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
from backends.call_formats import CallFormat, call_format
from backends.errors import InvalidRequest
from backends.types import Constraint, GrammarConstraint, JsonConstraint, ToolCallConstraint, ToolDef


def _trigger(text: str) -> str:
    """Lazy grammars (tool_choice "auto") wait for this pattern, matched from the start of the
    output; the grammar then sees the text from the first group on, i.e. from the trigger."""
    escaped = re.escape(text).replace("\\\n", "\\n")  # std::regex takes "\\n", not an escaped newline
    return r"[\s\S]*?(" + escaped + r")[\s\S]*"


@dataclass(frozen=True, slots=True)
class Grammar:
    text: str
    lazy: bool  # True: free text until the trigger, grammar from there on
    client: bool = False  # the client wrote it (errors name its "grammar" field)
    trigger: str = _trigger(tl.OPEN)


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
    fmt = call_format(constraint.format)
    return _tool_grammar(constraint) if fmt.shape == "hermes" else _family_grammar(constraint, fmt)


def _tool_grammar(c: ToolCallConstraint) -> Grammar:
    # The converter names its top rule "root"; rename it so our own root can wrap it in the tags.
    rules = _schema_rules(tl.call_schema(c.tools), param="tools")
    rules = re.sub(r"^root ::=", "tool-call-json ::=", rules, flags=re.MULTILINE)
    call = f'"{_gbnf_escape(tl.OPEN)}\\n" tool-call-json "\\n{_gbnf_escape(tl.CLOSE)}"'
    root = 'root ::= tool-call ("\\n" tool-call)*\n' if c.parallel else "root ::= tool-call\n"
    return Grammar(f"{root}tool-call ::= {call}\n{rules}", lazy=not c.required)


def _family_grammar(c: ToolCallConstraint, fmt: CallFormat) -> Grammar:
    """Calls written the family's way (``backends.call_formats``): each known function's name
    fixed, its arguments valid for its schema."""
    values = _value_rules(c.tools, fmt)
    calls = []
    for i, tool in enumerate(c.tools):
        head, name = _lit(fmt.call_open), _lit(tool.name)
        if fmt.shape == "object":
            body = f'"{{" space "\\"name\\"" space ":" space "\\"" {name} "\\"" "," space '
            body += f'"\\"{fmt.args_key}\\"" space ":" space {values[f"qa{i}"]} "}}"'
            calls.append(f"call{i} ::= {_seq(head, body, _lit(fmt.call_close))}")
        elif fmt.shape == "named":
            args = values[f"qa{i}"]
            call_id = f"( {_lit(fmt.id_sep)} [a-zA-Z0-9]{{9}} )?" if fmt.id_sep else ""
            calls.append(f"call{i} ::= {_seq(head, name, call_id, _lit(fmt.name_sep), args, _lit(fmt.call_close))}")
        else:
            params = _xml_params(i, tool, values)
            calls.append(f"call{i} ::= {_seq(head, name, _lit(fmt.name_sep), params, _lit(fmt.call_close))}")
    many = c.parallel and fmt.parallel
    body = f"call ({_seq(_lit(fmt.separator), 'call')})*" if many else "call"
    root = f"root ::= {_seq(_lit(fmt.block_open), body, _lit(fmt.block_close))}"
    alternatives = " | ".join(f"call{i}" for i in range(len(c.tools)))
    rules = "\n".join([root, f"call ::= {alternatives}", *calls, values["rules"]])
    return Grammar(rules, lazy=not c.required, trigger=_trigger(fmt.trigger))


def _value_rules(tools: tuple[ToolDef, ...], fmt: CallFormat) -> dict[str, str]:
    """GBNF for every tool's arguments (and, for XML, every parameter) from one converter run:
    each becomes a property of one schema, and its value expression is read off the converter's
    ``KEY-kv ::= "\"KEY\"" space ":" space VALUE`` rule (so rule names never collide)."""
    props: dict[str, Any] = {}
    for i, tool in enumerate(tools):
        props[f"qa{i}"] = tool.parameters or {"type": "object"}
        for j, schema in enumerate((tool.parameters.get("properties") or {}).values()):
            props[f"qp{i}x{j}"] = schema if isinstance(schema, dict) else {}
    rules = _schema_rules({"type": "object", "properties": props}, param="tools")
    rules = re.sub(r"^root ::=", "all-arguments ::=", rules, flags=re.MULTILINE)  # ours is the root
    out = {"rules": rules}
    for key in props:
        m = re.search(rf'^{key}-kv ::= "\\"{key}\\"" space ":" space (.*)$', rules, flags=re.MULTILINE)
        assert m is not None, key
        out[key] = f"( {m.group(1)} )"
    return out


def _xml_params(i: int, tool: ToolDef, values: dict[str, str]) -> str:
    """Qwen3-Coder's parameters: the required ones in order, then each optional one or not;
    a string is raw text, anything else JSON."""
    props = tool.parameters.get("properties") or {}
    required = set(tool.parameters.get("required") or ())
    parts = []
    for j, (key, schema) in enumerate(props.items()):
        raw = isinstance(schema, dict) and schema.get("type") == "string"
        value = "[^<]*" if raw else values[f"qp{i}x{j}"]
        part = f'{_lit(f"<parameter={key}>")} "\\n" {value} "\\n" {_lit("</parameter>")} "\\n"'
        parts.append(f"( {part} )" if key in required else f"( {part} )?")
    return " ".join(parts)


def _lit(text: str) -> str:
    return f'"{_gbnf_escape(text)}"' if text else ""


def _seq(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def _gbnf_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def sampler(grammar: Grammar, vocab: Any) -> Any:
    """A native grammar sampler (caller owns it); InvalidRequest if llama.cpp rejects the grammar."""
    text = grammar.text.encode()
    if grammar.lazy:
        patterns = (ctypes.c_char_p * 1)(grammar.trigger.encode())
        smpl = lc.llama_sampler_init_grammar_lazy_patterns(vocab, text, b"root", patterns, 1, None, 0)
    else:
        smpl = lc.llama_sampler_init_grammar(vocab, text, b"root")
    if not smpl:
        param = "grammar" if grammar.client else "response_format"
        raise InvalidRequest("the output constraint could not be compiled into a grammar", param=param)
    return smpl
