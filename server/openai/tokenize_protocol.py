"""Request models of /tokenize and /detokenize, with vLLM's field names so vLLM clients work
unchanged. Validation failures become 400s naming the field."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from backends.checks import is_unicode
from backends.errors import InvalidRequest, UnsupportedParameter
from server.openai.protocol import ChatMessage, StrictModel

# vLLM fields this server does not implement: refused by name when set, never ignored.
TOKENIZE_UNSUPPORTED = ("chat_template", "chat_template_kwargs", "tools", "media_io_kwargs", "mm_processor_kwargs")
_CHAT_ONLY = ("add_generation_prompt", "continue_final_message")


class TokenizeBody(StrictModel):
    """vLLM's TokenizeCompletionRequest and TokenizeChatRequest in one: ``prompt`` or ``messages``."""

    model: str | None = None  # vLLM's clients may leave it out; fine when one model is served
    prompt: str | None = None
    messages: list[ChatMessage] | None = Field(default=None, min_length=1)
    # vLLM's defaults: special tokens (BOS) for a prompt; none on top of a chat template.
    add_special_tokens: bool | None = None
    add_generation_prompt: bool | None = None
    continue_final_message: bool | None = None
    return_token_strs: bool | None = False
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    media_io_kwargs: dict[str, Any] | None = None
    mm_processor_kwargs: dict[str, Any] | None = None

    @field_validator("prompt")
    @classmethod
    def _unicode(cls, value: str | None) -> str | None:
        if value is not None and not is_unicode(value):
            raise ValueError("not valid Unicode (it holds a lone surrogate)")
        return value

    def check(self) -> None:
        """Cross-field rules, raised with the field they concern (a model validator cannot name it)."""
        if (self.prompt is None) == (self.messages is None):
            raise InvalidRequest("Send exactly one of 'prompt' and 'messages'.", param="prompt")
        for field in TOKENIZE_UNSUPPORTED:
            if getattr(self, field) is not None:
                raise UnsupportedParameter(f"'{field}' is not supported by this server's /tokenize.", param=field)
        if self.prompt is not None:
            for field in _CHAT_ONLY:
                if getattr(self, field) is not None:
                    raise InvalidRequest(f"'{field}' applies to 'messages' only.", param=field)
        if self.add_generation_prompt and self.continue_final_message:
            raise InvalidRequest(
                "Cannot set both 'continue_final_message' and 'add_generation_prompt' to true.",
                param="continue_final_message",
            )


class DetokenizeBody(StrictModel):
    model: str | None = None
    tokens: list[int]
