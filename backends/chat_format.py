"""Which model family a chat template belongs to, read from the template's own text (as
llama.cpp's ``common/chat.cpp`` tells them apart): how that family writes tool calls and how
it marks its reasoning.

Rules are tried in order; the first whose every needle occurs in the template wins. A template
no rule knows is "generic": Hermes-form tool calls, and ``<think>`` reasoning if it mentions it.
"""

from __future__ import annotations

from dataclasses import dataclass

from backends.reasoning import ReasoningMarkers

# DeepSeek's markers are spelt with FULLWIDTH VERTICAL LINE and LOWER ONE EIGHTH BLOCK characters.
DEEPSEEK_CALLS = "<\uff5ctool\u2581calls\u2581begin\uff5c>"
THINK = ReasoningMarkers("<think>", "</think>")
MISTRAL_THINK = ReasoningMarkers("[THINK]", "[/THINK]")
SEED_THINK = ReasoningMarkers("<seed:think>", "</seed:think>")
APERTUS_THINK = ReasoningMarkers("<|inner_prefix|>", "<|inner_suffix|>")
# gpt-oss's harmony format: reasoning is the analysis channel; the answer is the final channel
# (a commentary channel addressed to a function is a tool call, left to the call parser).
HARMONY_THINK = ReasoningMarkers(
    "<|channel|>analysis<|message|>",
    "<|end|>",
    turn_start="<|start|>assistant",
    answer_prefix="<|channel|>final<|message|>",
)


@dataclass(frozen=True, slots=True)
class ChatFormat:
    """A family: its name, its tool-call syntax (a key of ``backends.tool_formats.FORMATS``)
    and its reasoning markers (None: the family does not reason in markers)."""

    family: str
    tool_format: str
    reasoning: ReasoningMarkers | None


@dataclass(frozen=True, slots=True)
class Rule:
    family: str
    needles: tuple[str, ...]
    tool_format: str


# First match wins: the more specific rules come before the ones they would also match.
RULES: tuple[Rule, ...] = (
    Rule("gpt-oss", ("<|channel|>", "<|message|>"), "harmony"),
    Rule("Mistral (Nemo)", ("[TOOL_CALLS][",), "mistral_nemo"),
    Rule("Mistral (Small 3.2, Devstral, Magistral)", ("[TOOL_CALLS]",), "mistral"),
    # R1 writes "function<sep>NAME" and fenced JSON; V3.1 "NAME<sep>" and bare JSON.
    Rule("DeepSeek R1", (DEEPSEEK_CALLS, "```json"), "deepseek_r1"),
    Rule("DeepSeek V3.1", (DEEPSEEK_CALLS,), "deepseek_v3_1"),
    Rule("Functionary v3.2", (">>>all",), "functionary_v3_2"),
    Rule("Functionary v3.1 (Llama 3.1)", ("<function=", "<|start_header_id|>"), "functionary_v3_1"),
    Rule("Qwen3-Coder / Qwen3.5", ("<tool_call>", "<function=", "<parameter="), "qwen3_coder"),
    Rule("Granite 3.x", ("<|tool_call|>",), "granite"),
    # Families recognised but whose own syntax is not implemented yet: Hermes form (see call_formats).
    Rule("GLM 4.5+", ("<arg_key>", "<arg_value>"), "glm"),
    Rule("MiniMax M2/M3", ("<invoke name=",), "minimax"),
    Rule("Apriel", ("<tool_calls>[",), "apriel"),
    Rule("Kimi K2", ("<|tool_calls_section_begin|>",), "kimi_k2"),
    Rule("Command R7B", ("<|START_ACTION|>",), "command_r7b"),
    Rule("Seed-OSS", ("<seed:tool_call>",), "seed_oss"),
    Rule("Llama 3.x", ("<|start_header_id|>", "ipython"), "llama3_json"),
    Rule("Hermes 2 Pro / Qwen 2.5 / Qwen3", ("<tool_call>",), "hermes"),
)


def reasoning_markers(source: str) -> ReasoningMarkers | None:
    if "<|channel|>analysis" in source or ('"analysis"' in source and "<|channel|>" in source):
        return HARMONY_THINK
    if "<seed:think>" in source:
        return SEED_THINK
    if "[THINK]" in source:
        return MISTRAL_THINK
    if "<|inner_prefix|>" in source:
        return APERTUS_THINK
    if "</think>" in source:
        return THINK
    return None


def detect(source: str) -> ChatFormat:
    """The family of a chat template (its Jinja source)."""
    markers = reasoning_markers(source)
    for rule in RULES:
        if all(needle in source for needle in rule.needles):
            return ChatFormat(rule.family, rule.tool_format, markers)
    return ChatFormat("generic", "hermes", markers)
