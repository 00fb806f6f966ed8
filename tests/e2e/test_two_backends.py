"""llama.cpp and vLLM side by side in one server, routed by the request's ``model``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest

from tests.e2e.conftest import Server
from toolkit.hf_prepare import default_fixtures

pytestmark = pytest.mark.slow
QUESTION = [{"role": "user", "content": "Which city is the capital of France?"}]


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[Server]:
    bf16 = default_fixtures(model_path.parent)["bf16"]
    assert (bf16 / "config.json").is_file(), "run `quantserve models prepare --vllm` first"
    workdir = tmp_path_factory.mktemp("both")
    config = workdir / "both.yaml"
    config.write_text(
        "models:\n"
        f"  - {{id: smol-gguf, path: {model_path}, options: {{n_ctx: 1024}}}}\n"
        f"  - id: smol-vllm\n    path: {bf16}\n"
        "    options: {max_model_len: 1024, kv_cache_memory_gib: 0.5, enforce_eager: true}\n"
    )
    srv = Server(["--config", str(config)], workdir / "server.log")
    try:
        srv.wait_ready(timeout=600)
        yield srv
    finally:
        srv.stop()


def test_both_engines_answer_through_the_sdk(both: Server) -> None:
    client = openai.OpenAI(base_url=f"{both.base_url}/v1", api_key="unused", max_retries=0)
    cards = {m.id: m.model_dump() for m in client.models.list().data}
    assert {k: v["backend"] for k, v in cards.items()} == {"smol-gguf": "llama_cpp", "smol-vllm": "vllm"}
    assert cards["smol-vllm"]["format"] == "safetensors"
    for model in cards:
        resp = client.chat.completions.create(model=model, messages=QUESTION, temperature=0, max_tokens=24)  # type: ignore[arg-type]
        assert "Paris" in (resp.choices[0].message.content or ""), (model, resp)
        chunks = list(
            client.chat.completions.create(
                model=model,
                messages=QUESTION,  # type: ignore[arg-type]
                temperature=0,
                max_tokens=24,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == resp.choices[0].message.content
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == resp.usage.completion_tokens  # type: ignore[union-attr]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="smol-vllm", messages=[{"role": "user", "content": "word " * 3000}])
    assert err.value.code == "context_length_exceeded"


def test_tools_structured_output_logprobs_and_n_on_both_engines(both: Server) -> None:
    """The same SDK calls give valid, OpenAI-shaped answers whichever engine serves the model."""
    params = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}}, "required": ["city"]}
    tools: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": params}}]
    weather: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
    client = openai.OpenAI(base_url=f"{both.base_url}/v1", api_key="unused", max_retries=0)
    for model in ("smol-gguf", "smol-vllm"):
        called = client.chat.completions.create(
            model=model,
            messages=weather,
            tools=tools,
            tool_choice="required",
            parallel_tool_calls=False,  # a 135M model may repeat a call until max_tokens otherwise
            temperature=0,
            max_tokens=60,
        )
        calls = called.choices[0].message.tool_calls
        assert called.choices[0].finish_reason == "tool_calls" and calls, (model, called)
        for call in calls:
            jsonschema.validate(json.loads(call.function.arguments), params)  # type: ignore[union-attr]
        shaped = client.chat.completions.create(
            model=model,
            messages=weather,
            response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": params}},
            temperature=0,
            max_tokens=60,
        )
        jsonschema.validate(json.loads(shaped.choices[0].message.content or ""), params)
        scored = client.chat.completions.create(
            model=model, messages=QUESTION, temperature=0, max_tokens=6, logprobs=True, top_logprobs=2, n=2
        )
        assert [c.index for c in scored.choices] == [0, 1], model
        for choice in scored.choices:
            assert choice.logprobs is not None and choice.logprobs.content, model
            assert "".join(e.token for e in choice.logprobs.content) == choice.message.content
