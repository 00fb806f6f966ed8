"""chat_template_kwargs and documents reach the model's chat template (real SmolLM2 GGUF; the
template is replaced by one that shows the variables, so their effect is visible in the tokens)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import httpx
import pytest

from server.settings import Settings
from tests.api.helpers import assert_openai_error, chat_body

ClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]

# Shows a kwarg and the documents before the conversation, the way RAG/thinking templates do.
TEMPLATE = (
    "{% if enable_thinking is defined and not enable_thinking %}/no_think\n{% endif %}"
    "{% if documents %}{% for d in documents %}<doc>{{ d.text }}</doc>\n{% endfor %}{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
async def shown(app_client: ClientFactory, make_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(make_settings({"n_ctx": 1024, "chat_template": TEMPLATE})) as c:
        yield c


async def _prompt_tokens(client: httpx.AsyncClient, **fields: object) -> int:
    resp = await client.post("/v1/chat/completions", json=chat_body(max_tokens=1, **fields))
    assert resp.status_code == 200, resp.text
    return int(resp.json()["usage"]["prompt_tokens"])


async def test_chat_template_kwargs_reach_the_template(shown: httpx.AsyncClient) -> None:
    plain = await _prompt_tokens(shown)
    assert await _prompt_tokens(shown, chat_template_kwargs={"enable_thinking": True}) == plain
    assert await _prompt_tokens(shown, chat_template_kwargs={"enable_thinking": False}) > plain


async def test_documents_reach_the_template(shown: httpx.AsyncClient) -> None:
    plain = await _prompt_tokens(shown)
    docs = [{"title": "Paris", "text": "Paris is the capital of France."}]
    assert await _prompt_tokens(shown, documents=docs) > plain


async def test_bad_chat_template_kwargs_are_a_400_naming_the_field(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/chat/completions", json=chat_body(chat_template_kwargs=["enable_thinking"]))
    assert_openai_error(resp, 400, "invalid_value", "chat_template_kwargs")
    resp = await client.post("/v1/chat/completions", json=chat_body(chat_template_kwargs={"messages": []}))
    assert "may not set messages" in assert_openai_error(resp, 400, "invalid_value", "chat_template_kwargs")


async def test_the_default_model_accepts_chat_template_kwargs(client: httpx.AsyncClient) -> None:
    resp = await client.post(
        "/v1/chat/completions", json=chat_body(max_tokens=5, chat_template_kwargs={"enable_thinking": False})
    )
    assert resp.status_code == 200, resp.text
