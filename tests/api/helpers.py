"""Small helpers for the API tests: SSE parsing and the OpenAI error shape."""

from __future__ import annotations

import json
from typing import Any

import httpx

MODEL = "smollm2-135m-instruct"
CAPITAL = [{"role": "user", "content": "Which city is the capital of France?"}]


def parse_sse(text: str) -> list[Any]:
    """data payloads in order ([DONE] kept as the string)."""
    out: list[Any] = []
    for line in text.splitlines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def assert_openai_error(resp: httpx.Response, status: int, code: str | None, param: str | None = None) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["code"] == code
    assert isinstance(err["message"], str) and err["message"]
    assert err["type"] == (
        "invalid_request_error" if status < 429 else "rate_limit_error" if status == 429 else "server_error"
    )
    if param is not None:
        assert err["param"] == param
    return str(err["message"])


def chat_body(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": CAPITAL, "temperature": 0, **fields}
