"""The batched llama.cpp engine against the real SmolLM2-135M GGUF (no mocks).

Prompts use SmolLM2's ChatML layout written out by hand (the engine takes tokens; the chat
template is the backend's job), because a bare prompt often makes this instruct model stop at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from pathlib import Path

import pytest

from backends.errors import BackendUnavailable, Overloaded
from backends.llama_cpp.batched import BatchedEngine
from backends.types import GenerationChunk, SamplingParams

pytestmark = pytest.mark.slow

SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
ANIMALS = ("cat", "dog", "bird", "fish", "lion", "tiger", "bear", "wolf")
GREEDY = SamplingParams(max_tokens=24, temperature=0.0)


def chat(user: str) -> str:
    return f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


def make_engine(
    model_path: Path, *, parallel: int, max_queue: int = 16, prefix_cache: bool = False, sampler: str | None = None
) -> BatchedEngine:
    return BatchedEngine(
        model_path,
        n_ctx=512,
        parallel=parallel,
        n_batch=256,
        n_threads=2,
        n_gpu_layers=0,
        flash_attn=True,  # per-row attention: results do not depend on batch composition
        cache_type_k="f16",
        cache_type_v="f16",
        max_queue=max_queue,
        prefix_cache=prefix_cache,
        sampler=sampler,
    )


@pytest.fixture(scope="module")
def engine8(model_path: Path) -> Iterator[BatchedEngine]:
    engine = make_engine(model_path, parallel=8)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def engine1(model_path: Path) -> Iterator[BatchedEngine]:
    """One slot, one queue place: makes slot hand-over and queue-full observable."""
    engine = make_engine(model_path, parallel=1, max_queue=1)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def cached_engine(model_path: Path) -> Iterator[BatchedEngine]:
    engine = make_engine(model_path, parallel=2, prefix_cache=True)
    yield engine
    engine.close()


async def collect(
    engine: BatchedEngine, prompt: str, sampling: SamplingParams = GREEDY, request_id: str = "t"
) -> list[GenerationChunk]:
    tokens = engine.tokenize(prompt, add_special=True)
    return [c async for c in engine.generate(request_id, tokens, sampling)]


def text_of(chunks: list[GenerationChunk]) -> str:
    return "".join(c.text for c in chunks)


def check_stream_shape(chunks: list[GenerationChunk]) -> None:
    """finish_reason and usage only on the last chunk; chunk token counts add up to the usage."""
    assert chunks, "a stream always ends with a final chunk"
    assert all(c.finish_reason is None and c.usage is None for c in chunks[:-1])
    last = chunks[-1]
    assert chunks[0].queue_s is not None and chunks[0].queue_s >= 0, "the first chunk reports the queue time"
    assert all(c.queue_s is None for c in chunks[1:])
    assert last.finish_reason in ("stop", "length")
    assert last.usage is not None
    assert sum(c.tokens for c in chunks) == last.usage.completion_tokens


async def first_chunk(stream: AsyncIterator[GenerationChunk], timeout: float = 30.0) -> GenerationChunk:
    return await asyncio.wait_for(anext(stream), timeout)


async def test_concurrent_greedy_streams_equal_solo(engine8: BatchedEngine) -> None:
    prompts = [chat(f"Write a short story about a {animal}.") for animal in ANIMALS]
    solo = [await collect(engine8, p) for p in prompts]
    together = await asyncio.gather(*(collect(engine8, p, request_id=f"c{i}") for i, p in enumerate(prompts)))
    for alone, batched in zip(solo, together, strict=True):
        check_stream_shape(batched)
        assert text_of(batched) == text_of(alone)
        assert batched[-1].usage == alone[-1].usage
        assert batched[-1].finish_reason == alone[-1].finish_reason
    assert len({text_of(s) for s in solo}) > 1, "distinct prompts should give distinct outputs"
    assert engine8.stats().running == 0


async def test_max_tokens_gives_exactly_n_tokens_and_length(engine8: BatchedEngine) -> None:
    chunks = await collect(
        engine8, chat("Write a short story about a cat."), SamplingParams(max_tokens=5, temperature=0)
    )
    check_stream_shape(chunks)
    assert chunks[-1].finish_reason == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


async def test_seeded_sampling_is_reproducible_beside_other_streams(engine8: BatchedEngine) -> None:
    # Every stage of the native chain is on: penalties, top_k, top_p, min_p, temperature, seed.
    params = SamplingParams(
        max_tokens=16, temperature=0.9, top_p=0.9, top_k=40, min_p=0.05, seed=1234, repeat_penalty=1.1
    )
    prompt = chat("Write a short story about a fox.")
    alone = await collect(engine8, prompt, params)
    beside = await asyncio.gather(
        collect(engine8, prompt, params), collect(engine8, chat("Say hi."), GREEDY), collect(engine8, prompt, params)
    )
    check_stream_shape(alone)
    assert text_of(beside[0]) == text_of(alone) == text_of(beside[2])
    other_seed = await collect(engine8, prompt, SamplingParams(max_tokens=16, temperature=1.5, seed=99))
    assert text_of(other_seed) != text_of(alone)


async def test_stats_report_running_requests_and_kv_usage(engine1: BatchedEngine) -> None:
    stream = engine1.generate("s", engine1.tokenize(chat("Count from 1 to 1000."), add_special=True), GREEDY)
    try:
        await first_chunk(stream)
        stats = engine1.stats()
        assert stats.running == 1 and stats.waiting == 0
        assert stats.kv_cache_usage is not None and 0 < stats.kv_cache_usage < 1
    finally:
        await stream.aclose()


async def test_stop_string_split_across_tokens(engine8: BatchedEngine) -> None:
    full = text_of(await collect(engine8, chat("Write a short story about a cat.")))
    # A stop string spanning a space: byte-level BPE never merges across a word boundary, so
    # "ab cd" always starts in one sampled token and ends in another.
    space = full.index(" ", len(full) // 3)
    stop = full[space - 2 : space + 3]
    assert " " in stop and len(stop) == 5
    chunks = await collect(engine8, chat("Write a short story about a cat."), SamplingParams(24, 0.0, stop=(stop,)))
    check_stream_shape(chunks)
    assert chunks[-1].finish_reason == "stop"
    assert text_of(chunks) == full[: full.index(stop)]


async def test_utf8_multibyte_characters_across_chunks(engine8: BatchedEngine) -> None:
    # The model answers with emoji, each of which this vocabulary spells with several byte tokens.
    assert len(engine8.tokenize("🌟", add_special=False)) > 1
    chunks = await collect(engine8, chat("Give me five emoji."), SamplingParams(max_tokens=24, temperature=0))
    check_stream_shape(chunks)
    text = text_of(chunks)
    assert sum(ord(ch) > 0xFFFF for ch in text) >= 3, text
    # No chunk may carry half a character; only a character cut off by max_tokens can end the
    # stream as U+FFFD (TextStream.flush), exactly as decoding all the bytes at once would.
    body = text.removesuffix("\ufffd") if chunks[-1].finish_reason == "length" else text
    assert "\ufffd" not in body
    for chunk in chunks[:-1]:
        assert "\ufffd" not in chunk.text


async def test_cancel_frees_slot_and_stops_compute(engine1: BatchedEngine) -> None:
    prompt = engine1.tokenize(chat("Count from 1 to 1000."), add_special=True)
    long = engine1.generate("long", prompt, SamplingParams(temperature=0.0))  # no max_tokens
    await first_chunk(long)
    for _ in range(3):
        await first_chunk(long)
    assert engine1.stats().running == 1
    await long.aclose()  # what the HTTP layer does when the client disconnects
    # The next request gets the only slot at once, though the long one was far from done.
    start = asyncio.get_running_loop().time()
    short = await collect(engine1, chat("Say hi."), SamplingParams(max_tokens=4, temperature=0))
    assert asyncio.get_running_loop().time() - start < 10
    check_stream_shape(short)
    assert short[0].queue_s is not None and short[0].queue_s < 5, "waited for more than the one step it takes to free"
    await asyncio.sleep(0.1)
    counted = engine1.generated_tokens
    await asyncio.sleep(0.5)
    assert engine1.generated_tokens == counted, "a cancelled stream must not keep generating"
    assert engine1.stats().running == 0
    assert engine1.stats().kv_cache_usage == 0.0


async def test_queue_full_raises_overloaded_before_first_chunk(engine1: BatchedEngine) -> None:
    def start(name: str) -> AsyncGenerator[GenerationChunk, None]:
        return engine1.generate(name, engine1.tokenize(chat("Count from 1 to 1000."), add_special=True), GREEDY)

    running, queued, rejected = start("a"), start("b"), start("c")
    first = asyncio.ensure_future(anext(running))
    second = asyncio.ensure_future(anext(queued))
    await asyncio.sleep(0)  # both are submitted now: one slot taken, one queue place taken
    try:
        with pytest.raises(Overloaded) as info:
            await anext(rejected)
        assert info.value.retry_after >= 1
        assert engine1.stats().waiting + engine1.stats().running == 2
        await asyncio.wait_for(first, 30)
    finally:
        second.cancel()  # a client giving up while queued
        await asyncio.gather(first, second, return_exceptions=True)
        for stream in (running, queued):
            await stream.aclose()
    # Both slot and queue place are free again: a new request runs to the end.
    check_stream_shape(await collect(engine1, chat("Say hi."), SamplingParams(max_tokens=2, temperature=0)))


async def test_prefix_reuse_gives_identical_output(cached_engine: BatchedEngine, engine8: BatchedEngine) -> None:
    first = chat("Write a short story about a dog.")
    second = chat("Write a short story about a bear.")
    cold = await collect(cached_engine, first)
    assert cold[-1].usage is not None and cold[-1].usage.cached_tokens == 0
    # The same prompt again: everything but the last prompt token comes from the slot's KV
    # (flash attention on: one recomputed token is enough for bit-identical logits).
    again = await collect(cached_engine, first)
    assert again[-1].usage is not None
    assert again[-1].usage.cached_tokens == again[-1].usage.prompt_tokens - 1
    assert text_of(again) == text_of(cold)
    # Same system prompt, another question: the shared prefix is reused, and the output equals
    # that of an engine that computes the whole prompt.
    warm = await collect(cached_engine, second)
    assert warm[-1].usage is not None and warm[-1].usage.cached_tokens > 10
    assert text_of(warm) == text_of(await collect(engine8, second))


async def test_closed_engine_refuses_requests(model_path: Path) -> None:
    engine = make_engine(model_path, parallel=1)
    engine.close()
    engine.close()  # idempotent
    with pytest.raises(BackendUnavailable):
        await collect(engine, chat("Say hi."))


@pytest.mark.parametrize("route", ["numpy", "backend"])
async def test_sampling_routes_keep_greedy_tokens_and_seeds(model_path: Path, route: str) -> None:
    """Greedy output is token for token the native chain's (the sampler before batching), on
    every route; a seeded sampled request repeats itself beside other streams."""
    prompts = [chat(f"Write a short story about a {animal}.") for animal in ANIMALS[:4]]
    greedy = SamplingParams(max_tokens=12, temperature=0.0)
    seeded = SamplingParams(max_tokens=12, temperature=1.0, seed=77)
    outputs: dict[str, list[str]] = {}
    for name in ("native", route):
        engine = make_engine(model_path, parallel=4, max_queue=8, sampler=name)
        try:
            batch = await asyncio.gather(*(collect(engine, p, greedy, f"g{i}") for i, p in enumerate(prompts)))
            outputs[name] = [text_of(c) for c in batch]
            if name == route:
                alone = text_of(await collect(engine, prompts[0], seeded))
                beside = await asyncio.gather(
                    collect(engine, prompts[0], seeded), collect(engine, prompts[1], greedy, "n")
                )
                assert text_of(beside[0]) == alone
        finally:
            engine.close()
    assert outputs[route] == outputs["native"]


@pytest.mark.parametrize("route", ["numpy", "native", "backend"])
async def test_ignore_eos_runs_every_sampling_to_max_tokens(model_path: Path, route: str) -> None:
    """``ignore_eos`` bans the end tokens on every route: greedy goes on past the point where it
    stopped (same text up to there), and so do full, low-temperature and truncated sampling,
    batched together with a request that still ends by itself."""
    prompt = chat("Say hi.")
    limit = 48
    plain = SamplingParams(max_tokens=limit, temperature=0.0)
    banned = [
        SamplingParams(max_tokens=limit, temperature=0.0, ignore_eos=True),
        SamplingParams(max_tokens=limit, temperature=1.0, seed=3, ignore_eos=True),
        SamplingParams(max_tokens=limit, temperature=0.1, seed=4, ignore_eos=True),
        SamplingParams(max_tokens=limit, temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, seed=5, ignore_eos=True),
    ]
    engine = make_engine(model_path, parallel=5, max_queue=8, sampler=route)
    try:
        runs = await asyncio.gather(
            collect(engine, prompt, plain, "plain"),
            *(collect(engine, prompt, s, f"b{i}") for i, s in enumerate(banned)),
        )
    finally:
        engine.close()
    ended, *kept_going = runs
    assert ended[-1].finish_reason == "stop" and ended[-1].usage is not None
    assert ended[-1].usage.completion_tokens < limit, "the premise: this prompt ends by itself"
    for chunks in kept_going:
        check_stream_shape(chunks)
        assert chunks[-1].finish_reason == "length"
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == limit
    assert text_of(kept_going[0]).startswith(text_of(ended))
    assert len(text_of(kept_going[0])) > len(text_of(ended))
