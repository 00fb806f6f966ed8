"""Engine-neutral request/response types shared by every backend.

Only plain dataclasses live here: no FastAPI, no OpenAI schema, no engine import, so a
backend can be written (and tested) without the HTTP layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Literal

FinishReason = Literal["stop", "length", "tool_calls", "cancelled", "error"]


class ModelFormat(str, Enum):
    """Weight formats the registry can route."""

    GGUF = "gguf"
    AWQ = "awq"
    GPTQ = "gptq"
    COMPRESSED_TENSORS = "compressed-tensors"
    FP8 = "fp8"
    SAFETENSORS = "safetensors"


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """What the client asked for, already validated by the HTTP layer.

    ``max_tokens=None`` means "until end of sequence or the context is full".
    ``temperature=0`` means greedy decoding.
    """

    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repeat_penalty: float = 1.0
    # (token id, bias) pairs added to the logits before sampling; -100/100 ban/force a token.
    logit_bias: tuple[tuple[int, float], ...] = ()
    # None: no logprobs. k >= 0: the sampled token's logprob plus the k most likely alternatives.
    logprobs: int | None = None
    # Never end on an end-of-generation token: run to max_tokens, a stop string or a full context
    # (llama-server's and vLLM's ``ignore_eos``, which benchmarks send for equal-length outputs).
    ignore_eos: bool = False


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the model made (arguments: a JSON text, as OpenAI carries it)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolDef:
    """A function the client offers the model; ``parameters`` is its JSON schema (an object)."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    # An assistant turn's reasoning, kept apart from its content (templates that show past
    # reasoning read it as ``reasoning_content``).
    reasoning: str | None = None


@dataclass(frozen=True, slots=True)
class ToolCallConstraint:
    """Constrain the output to tool calls in the Hermes form every backend parses back
    (``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``).

    ``required``: the output must be one or more calls (tool_choice "required" or a named
    function; ``tools`` then holds only the allowed ones). Otherwise the model may answer in
    text and the constraint applies only from the first ``<tool_call>`` on ("auto").
    """

    tools: tuple[ToolDef, ...]
    required: bool
    parallel: bool = True
    # The model family's call syntax (a ``backends.call_formats`` name); the backend sets it.
    format: str = "hermes"


@dataclass(frozen=True, slots=True)
class JsonConstraint:
    """The output must be one JSON value: any object (``schema=None``) or one valid under ``schema``."""

    schema: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class GrammarConstraint:
    """The output must match a GBNF grammar the client wrote (llama-server's ``grammar``)."""

    gbnf: str


Constraint = ToolCallConstraint | JsonConstraint | GrammarConstraint


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One generation. Exactly one of ``messages`` (chat) and ``prompt`` is set."""

    request_id: str
    sampling: SamplingParams = field(default_factory=SamplingParams)
    messages: tuple[Message, ...] | None = None
    # Completions: a text, or token ids used exactly as given (no BOS added).
    prompt: str | tuple[int, ...] | None = None
    # An operator's cap below the context window (None: the context is the only limit).
    max_prompt_tokens: int | None = None
    # Functions the prompt offers the model (rendered by the chat template or our tool preamble).
    tools: tuple[ToolDef, ...] = ()
    # Output the engine must enforce by constrained decoding (grammar / structured outputs).
    constraint: Constraint | None = None
    # Chat only: extra variables for the chat template (``chat_template_kwargs``, e.g.
    # ``{"enable_thinking": false}``) and documents for templates that render them (RAG).
    template_kwargs: dict[str, Any] = field(default_factory=dict)
    documents: tuple[dict[str, Any], ...] | None = None
    # Chat only: split the model's reasoning from its answer (False: the raw text as content).
    split_reasoning: bool = True
    # Completions only: text that follows the insertion point (fill-in-the-middle).
    suffix: str | None = None
    # Most seconds to wait for an engine slot (None: only the whole-request limit applies).
    queue_timeout_s: float | None = None

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("exactly one of messages and prompt must be set")


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    # Of the completion tokens, those spent reasoning (see ``backends.reasoning.split_chunk``).
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class TopLogprob:
    token: str
    logprob: float
    bytes: bytes


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One sampled token's log-probability under the model, with the most likely alternatives."""

    token: str
    logprob: float
    bytes: bytes
    top: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class GenerationChunk:
    """A delta: new text since the previous chunk, never cumulative.

    The last chunk of a stream carries ``finish_reason`` and ``usage``.
    ``tokens`` is how many sampled tokens this chunk accounts for (metrics count them).
    ``queue_s``, on the first chunk, is how long the request waited before the engine took it
    (None when the engine cannot tell).
    """

    text: str = ""
    tokens: int = 0
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    queue_s: float | None = None
    # One entry per sampled token of this chunk when the request asked for logprobs.
    logprobs: tuple[TokenLogprob, ...] = ()
    # The part of the new output that is the model's reasoning (see backends/reasoning.py);
    # ``text`` is then only the answer. Empty for models and requests without reasoning.
    reasoning: str = ""
    # On the last chunk of a stream ended by a stop string: which one (Anthropic reports it).
    stop_sequence: str | None = None


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model as the settings describe it; ``options`` is validated by the backend."""

    id: str
    path: Path
    format: ModelFormat
    backend: str = "auto"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Device:
    """What this machine can run on: the registry's second input."""

    kind: Literal["cpu", "cuda", "metal"]
    name: str = "cpu"
    gpu_count: int = 0


@dataclass(frozen=True, slots=True)
class Support:
    ok: bool
    reason: str = ""

    @classmethod
    def yes(cls) -> Support:
        return cls(True, "")

    @classmethod
    def no(cls, reason: str) -> Support:
        return cls(False, reason)


@dataclass(frozen=True, slots=True)
class BackendInfo:
    backend: str
    model_id: str
    device: str
    format: str
    quantization: str
    kv_cache_dtype: str
    context_length: int


@dataclass(frozen=True, slots=True)
class EngineStats:
    """Live load figures read from the engine (metrics export them as gauges)."""

    running: int = 0
    waiting: int = 0
    kv_cache_usage: float | None = None
