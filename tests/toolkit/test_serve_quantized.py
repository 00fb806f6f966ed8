"""Quantized files from the toolkit load in the real server and answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from server.settings import ModelConfig, load_settings
from tests.conftest import AppClient, ClientFactory


async def answer(client: AppClient, model_id: str) -> dict[str, Any]:
    """One greedy chat completion from ``model_id``, checked to be real generated text."""
    resp = await client.post(
        "/v1/chat/completions",
        json={
            "model": model_id,
            "messages": [{"role": "user", "content": "Which city is the capital of France?"}],
            "temperature": 0,
            "max_tokens": 16,
        },
    )
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    # A 135M model re-quantized answers in its own words (Q8_0 here names no city): the point
    # is that the file loads, its chat template renders and it generates real text.
    assert body["choices"][0]["message"]["content"].strip()
    assert body["choices"][0]["finish_reason"] in ("stop", "length")
    assert body["usage"]["completion_tokens"] > 0
    return body


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_K_M"])
async def test_quantized_gguf_serves_a_chat(qtype: str, ladder: dict[str, Path], app_client: ClientFactory) -> None:
    model = ModelConfig(id=f"smol-{qtype.lower()}", path=ladder[qtype], options={"n_ctx": 512, "parallel": 1})
    async with app_client(load_settings(None, models=(model,))) as client:
        card = (await client.get(f"/v1/models/{model.id}")).json()
        assert (card["quantization"], card["backend"]) == (qtype, "llama_cpp")
        await answer(client, model.id)
