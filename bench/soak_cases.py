"""What the soak sends and how it judges the answers: good prompts (greedy or seeded, so each
has one right answer), bad requests with the error each must get, and the OpenAI shape checks."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class Good:
    """A request with a single right answer: greedy, or sampled with a fixed seed."""

    name: str
    chat: bool
    text: str
    max_tokens: int
    temperature: float = 0.0
    seed: int | None = None

    @property
    def path(self) -> str:
        return "/v1/chat/completions" if self.chat else "/v1/completions"

    def body(self, *, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": MODEL, "max_tokens": self.max_tokens, "temperature": self.temperature}
        if self.seed is not None:
            body["seed"] = self.seed
        if self.chat:
            body["messages"] = [{"role": "user", "content": self.text}]
        else:
            body["prompt"] = self.text
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body


GOOD = [
    Good("capital", True, "Which city is the capital of France?", 24),
    Good("haiku", True, "Write a haiku about the sea.", 32),
    Good("colours-chat", True, "List three primary colours.", 24),
    Good("cpu", True, "Explain what a CPU does in one sentence.", 40),
    Good("joke-seeded", True, "Tell me a joke.", 32, temperature=0.8, seed=7),
    Good("colours-text", False, "The three primary colours are", 16),
    Good("story-text", False, "Once upon a time", 32),
]


@dataclass(frozen=True)
class Bad:
    """A request the server must refuse before any work, with this status and error code."""

    name: str
    status: int
    code: str
    body: bytes
    path: str = "/v1/chat/completions"
    authorized: bool = True


def _chat(**fields: Any) -> bytes:
    return json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], **fields}).encode()


def _prompt(prompt: Any) -> bytes:
    return json.dumps({"model": MODEL, "prompt": prompt}).encode()


BAD = [
    Bad("bad-json", 400, "invalid_json", b'{"model": "' + MODEL.encode() + b'", "messages": ['),
    Bad("unknown-model", 404, "model_not_found", _chat(model="no-such-model")),
    # about 5000 tokens: over the default 4096-token context
    Bad(
        "prompt-too-long",
        400,
        "context_length_exceeded",
        _chat(messages=[{"role": "user", "content": "hello " * 5000}]),
    ),
    Bad("max-tokens-over-context", 400, "context_length_exceeded", _chat(max_tokens=100_000)),
    Bad("temperature-string", 400, "invalid_value", _chat(temperature="hot")),
    Bad("messages-string", 400, "invalid_value", _chat(messages="hello")),
    Bad("n-zero", 400, "invalid_value", _chat(n=0)),
    Bad("max-tokens-negative", 400, "invalid_value", _chat(max_tokens=-1)),
    Bad("empty-messages", 400, "invalid_value", _chat(messages=[])),
    Bad("unknown-field", 400, "invalid_value", _chat(frobnicate=True)),
    Bad("prompt-nested-too-deep", 400, "invalid_value", _prompt([[[1]]]), path="/v1/completions"),
    Bad("no-api-key", 401, "invalid_api_key", _chat(), authorized=False),
]


class Mismatch(Exception):
    """An answer that is not what it must be (wrong shape, status or content)."""


@dataclass(frozen=True)
class Answer:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int


def check_error(status: int, raw: bytes, bad: Bad) -> None:
    if status != bad.status:
        raise Mismatch(f"{bad.name}: status {status}, expected {bad.status}: {raw[:200]!r}")
    body = json.loads(raw)
    if set(body) != {"error"} or set(body["error"]) != {"message", "type", "param", "code"}:
        raise Mismatch(f"{bad.name}: not an OpenAI error object: {raw[:200]!r}")
    if body["error"]["code"] != bad.code or not body["error"]["message"]:
        raise Mismatch(f"{bad.name}: code {body['error']['code']!r}, expected {bad.code!r}")


def answer_of_full(good: Good, body: dict[str, Any]) -> Answer:
    choice = body["choices"][0]
    text = choice["message"]["content"] if good.chat else choice["text"]
    return _answer(text, choice["finish_reason"], body["usage"], good)


def answer_of_stream(good: Good, events: list[str]) -> Answer:
    """Check the SSE sequence (role first for chat, one finish, usage-only chunk, [DONE])."""
    if not events or events[-1] != "[DONE]":
        raise Mismatch(f"{good.name}: stream did not end with [DONE]")
    chunks = [json.loads(e) for e in events[:-1]]
    if any("error" in c for c in chunks):
        raise Mismatch(f"{good.name}: in-stream error {chunks[-1]}")
    usage_chunk = chunks[-1]
    if usage_chunk["choices"] != [] or not usage_chunk.get("usage"):
        raise Mismatch(f"{good.name}: the last chunk is not the usage chunk")
    body = chunks[:-1]
    if good.chat and body[0]["choices"][0]["delta"].get("role") != "assistant":
        raise Mismatch(f"{good.name}: the first chat chunk has no role")
    finishes = [c["choices"][0]["finish_reason"] for c in body if c["choices"][0]["finish_reason"]]
    if len(finishes) != 1 or body[-1]["choices"][0]["finish_reason"] is None:
        raise Mismatch(f"{good.name}: finish_reason must be on the last content chunk only: {finishes}")
    if len({c["id"] for c in chunks}) != 1:
        raise Mismatch(f"{good.name}: chunk ids differ")
    if good.chat:
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in body)
    else:
        text = "".join(c["choices"][0]["text"] for c in body)
    return _answer(text, finishes[0], usage_chunk["usage"], good)


def _answer(text: str, finish: str, usage: dict[str, Any], good: Good) -> Answer:
    answer = Answer(
        text,
        finish,
        usage["prompt_tokens"],
        usage["completion_tokens"],
        usage["prompt_tokens_details"]["cached_tokens"],
    )
    if usage["total_tokens"] != answer.prompt_tokens + answer.completion_tokens:
        raise Mismatch(f"{good.name}: total_tokens is not prompt + completion: {usage}")
    if finish not in ("stop", "length") or (finish == "length") != (answer.completion_tokens == good.max_tokens):
        raise Mismatch(f"{good.name}: finish_reason {finish} with {answer.completion_tokens} tokens")
    if not 0 <= answer.cached_tokens < answer.prompt_tokens:
        raise Mismatch(f"{good.name}: cached_tokens {answer.cached_tokens} of {answer.prompt_tokens}")
    return answer


def same_answer(good: Good, got: Answer, reference: Answer) -> None:
    """Everything but cached_tokens, which depends on what the slot held before."""
    fields = ("text", "finish_reason", "prompt_tokens", "completion_tokens")
    for field in fields:
        if getattr(got, field) != getattr(reference, field):
            raise Mismatch(f"{good.name}: {field} {getattr(got, field)!r} != reference {getattr(reference, field)!r}")
