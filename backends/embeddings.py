"""Engine-neutral types of the embedding and tokenizer endpoints, and the checks every backend
applies to them the same way (so a client gets the same 400 from any engine).

Kept apart from ``backends.types`` (the generation contract): embeddings and tokenization are
optional capabilities a backend may lack (``Backend.embed`` / ``tokenize`` / ``detokenize``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from backends.errors import ContextLengthExceeded, InvalidRequest, UnsupportedParameter
from backends.types import Message, ToolDef

# One input: a text, or token ids the client tokenized itself (OpenAI accepts both).
EmbeddingInput = str | tuple[int, ...]


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    request_id: str
    inputs: tuple[EmbeddingInput, ...]
    # None: the model's own size. Anything else must equal it (see check_dimensions).
    dimensions: int | None = None
    # An operator's cap below the context window, per input (None: the context is the only limit).
    max_input_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    """One unit-length (L2) vector per input, in input order; float32 values held as floats."""

    vectors: tuple[tuple[float, ...], ...]
    prompt_tokens: int


@dataclass(frozen=True, slots=True)
class TokenizeRequest:
    """Exactly one of ``prompt`` and ``messages`` (rendered with the model's chat template)."""

    prompt: str | None = None
    messages: tuple[Message, ...] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True
    # Leave the last message open (no end-of-turn), so the model would continue it.
    continue_final_message: bool = False
    return_token_strs: bool = False
    # Functions the prompt offers (chat only), rendered as generation would render them.
    tools: tuple[ToolDef, ...] = ()
    # Extra chat-template variables, as generation passes them (e.g. enable_thinking).
    template_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("exactly one of messages and prompt must be set")


@dataclass(frozen=True, slots=True)
class TokenizeResult:
    tokens: tuple[int, ...]
    # The vocabulary's spelling of each token (e.g. "Ġworld"), when asked for.
    token_strs: tuple[str, ...] | None = None


def input_tokens(
    inputs: Sequence[EmbeddingInput], tokenize: Callable[[str], list[int]], *, n_vocab: int
) -> list[list[int]]:
    """Token ids of every input; an empty input or a token id outside the vocabulary is a 400."""
    out: list[list[int]] = []
    for i, item in enumerate(inputs):
        tokens = tokenize(item) if isinstance(item, str) else list(item)
        if not tokens:
            raise InvalidRequest(f"input[{i}] is empty; every input must contain text or tokens.", param="input")
        bad = next((t for t in tokens if not 0 <= t < n_vocab), None)
        if bad is not None:
            raise InvalidRequest(
                f"input[{i}] contains token id {bad}; this model's token ids are 0..{n_vocab - 1}.", param="input"
            )
        out.append(tokens)
    return out


def check_input_lengths(tokens: Sequence[Sequence[int]], *, n_ctx: int, cap: int | None) -> None:
    """Each input must fit the model's context (and the operator's cap): never truncated silently."""
    limit = n_ctx if cap is None else min(n_ctx, cap)
    for i, ids in enumerate(tokens):
        if len(ids) > limit:
            what = "maximum context length" if limit == n_ctx else "per-input limit on this server"
            raise ContextLengthExceeded(
                f"This model's {what} is {limit} tokens, however input[{i}] has {len(ids)} tokens. "
                "Please reduce the length of the input.",
                param="input",
            )


def check_dimensions(requested: int | None, size: int) -> None:
    """``dimensions`` is honoured only when it is the model's own size: shortening a vector is
    only meaningful for models trained for it (Matryoshka), which a chat model is not."""
    if requested is not None and requested != size:
        raise UnsupportedParameter(
            f"This model produces {size}-dimensional embeddings and cannot shorten them; "
            f"omit 'dimensions' or set it to {size}.",
            param="dimensions",
        )


def cut_after_final_message(rendered: str, final_content: str) -> str:
    """``continue_final_message``: the conversation rendered without a generation prompt, cut
    right after the last message's text so its end-of-turn marker is gone (as transformers'
    ``apply_chat_template(continue_final_message=True)`` does)."""
    final = final_content.strip()
    at = rendered.rfind(final) if final else -1
    if at < 0:
        raise InvalidRequest(
            "continue_final_message is set, but the final message does not appear in the rendered chat "
            "template (is it empty?).",
            param="messages",
        )
    return rendered[: at + len(final)]
