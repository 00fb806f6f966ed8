"""Request checks every engine applies, each rule in one place: token ids in the vocabulary, text a
tokenizer can encode, and a prompt that fits the context. Each raises a typed error naming the
field, so a bad request is a 400 before any engine work."""

from __future__ import annotations

from collections.abc import Iterable

from backends.errors import ContextLengthExceeded, InvalidRequest


def check_token_ids(tokens: Iterable[int], n_vocab: int, param: str = "tokens") -> None:
    bad = next((t for t in tokens if not 0 <= t < n_vocab), None)
    if bad is not None:
        raise InvalidRequest(f"token id {bad} is not in this model's vocabulary (0..{n_vocab - 1}).", param=param)


def is_unicode(text: str) -> bool:
    """JSON may carry a lone surrogate ("\\ud800"), which no tokenizer can encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_unicode(text: str, param: str | None) -> None:
    """A lone surrogate is a 400 naming the field, not a tokenizer crash."""
    if not is_unicode(text):
        raise InvalidRequest("the text is not valid Unicode (it holds a lone surrogate)", param=param)


def check_prompt_fits(
    n_prompt: int, *, n_ctx: int, max_tokens: int | None, max_prompt_tokens: int | None = None, param: str = "prompt"
) -> None:
    """Refuse before any work what cannot fit, counted with the model's own tokenizer: an empty
    prompt, one over the operator's per-model cap, or prompt + completion over the context."""
    if n_prompt == 0:
        raise InvalidRequest("the prompt is empty", param=param)
    if max_prompt_tokens is not None and n_prompt > max_prompt_tokens:
        raise ContextLengthExceeded(
            f"Your prompt has {n_prompt} tokens; this server accepts at most {max_prompt_tokens} "
            f"prompt tokens for this model. Please reduce the length of the {param}.",
            param=param,
        )
    wanted = max_tokens or 0
    if n_prompt + max(wanted, 1) <= n_ctx:
        return
    if n_prompt >= n_ctx:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {n_ctx} tokens. However, your prompt has "
            f"{n_prompt} tokens. Please reduce the length of the {param}.",
            param=param,
        )
    raise ContextLengthExceeded(
        f"This model's maximum context length is {n_ctx} tokens. However, you requested "
        f"{n_prompt + wanted} tokens ({n_prompt} in the {param}, {wanted} in the completion). "
        f"Please reduce the length of the {param} or max_tokens.",
        param="max_tokens",
    )
