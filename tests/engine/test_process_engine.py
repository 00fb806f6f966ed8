"""The llama.cpp engine in its own process, against the real SmolLM2-135M GGUF (no mocks).

What crossing the process boundary must keep: the same text as the in-process engine, one pipe
message per engine step (not per token), cancellation reaching the engine process, and the
engine's typed errors (429 ``Overloaded`` with its Retry-After, 400 ``InvalidRequest``).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backends.errors import InvalidRequest, Overloaded
from backends.llama_cpp.process_engine import ProcessEngine
from backends.types import SamplingParams
from tests.engine.test_batched_engine import ANIMALS, GREEDY, chat, check_stream_shape, make_engine, text_of

pytestmark = pytest.mark.slow
OPTIONS: dict[str, Any] = {
    "n_ctx": 512,
    "parallel": 4,
    "n_batch": 256,
    "n_threads": 2,
    "n_gpu_layers": 0,
    "flash_attn": True,
    "cache_type_k": "f16",
    "cache_type_v": "f16",
    "max_queue": 0,  # four running, none waiting: the fifth is refused
    "prefix_cache": False,
}


@pytest.fixture(scope="module")
def engine(model_path: Path) -> Iterator[ProcessEngine]:
    engine = ProcessEngine(model_path, OPTIONS, embedding_pooling="model", label="test")
    yield engine
    engine.close()
    assert not engine.alive and engine.failure is None  # a clean close is not a crash


async def stream_text(engine: ProcessEngine, prompt: str, sampling: SamplingParams = GREEDY) -> str:
    tokens = engine.tokenize(chat(prompt), add_special=True)
    chunks = [c async for c in engine.generate("t", tokens, sampling)]
    check_stream_shape(chunks)
    return text_of(chunks)


async def test_same_text_as_in_process_and_one_message_per_step(
    engine: ProcessEngine, model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts = [f"Write one sentence about a {animal}." for animal in ANIMALS[:4]]
    local = make_engine(model_path, parallel=4)
    try:
        expected = []
        for prompt in prompts:
            tokens = local.tokenize(chat(prompt), add_special=True)
            expected.append(text_of([c async for c in local.generate("t", tokens, GREEDY)]))
    finally:
        local.close()
    # Count what the pipe delivers: every item of a step arrives in one dispatch call.
    messages, items = [], []
    dispatch = engine._streams.dispatch

    def counting(step: Any, *rest: Any) -> None:
        step = list(step)
        messages.append(len(step))
        items.extend(step)
        dispatch(step, *rest)

    monkeypatch.setattr(engine._streams, "dispatch", counting)
    got = await asyncio.gather(*(stream_text(engine, p) for p in prompts))
    assert got == expected
    assert len(items) > len(messages), f"{len(items)} items in {len(messages)} messages: one per token, not per step"
    assert max(messages) == 4  # the four streams decode in one batch, so their chunks share messages


async def test_cancel_reaches_the_engine_process(engine: ProcessEngine) -> None:
    tokens = engine.tokenize(chat("Count from 1 to 1000."), add_special=True)
    long = engine.generate("long", tokens, SamplingParams(temperature=0.0))
    for _ in range(3):
        await asyncio.wait_for(anext(long), 60)
    await long.aclose()
    for _ in range(100):  # stats come from the engine process, at most 0.25 s late
        if engine.stats().running == 0:
            break
        await asyncio.sleep(0.05)
    assert engine.stats().running == 0 and engine.stats().kv_cache_usage == 0.0


async def test_typed_errors_cross_the_process_boundary(engine: ProcessEngine) -> None:
    tokens = engine.tokenize(chat("Count from 1 to 1000."), add_special=True)
    running = [engine.generate(f"r{i}", tokens, GREEDY) for i in range(4)]
    try:
        for stream in running:
            await asyncio.wait_for(anext(stream), 60)
        with pytest.raises(Overloaded) as info:
            await anext(engine.generate("fifth", tokens, GREEDY))
        assert info.value.retry_after >= 1
    finally:
        for stream in running:
            await stream.aclose()
    out_of_vocabulary = SamplingParams(max_tokens=4, logit_bias=((10**7, 5.0),))
    with pytest.raises(InvalidRequest) as bad:
        await anext(engine.generate("bad", tokens, out_of_vocabulary))
    assert bad.value.param == "logit_bias"
    assert engine.alive


async def test_embeddings_come_from_the_engine_process(engine: ProcessEngine) -> None:
    inputs = [engine.tokenize(text, add_special=True) for text in ("a cat", "a dog")]
    vectors = await engine.embed(inputs)
    assert [len(v) for v in vectors] == [engine.embedding_size] * 2
    assert all(abs(sum(x * x for x in v) - 1.0) < 1e-4 for v in vectors)


def _nice_of_threads(pid: int) -> dict[str, int]:
    """name -> nice of every thread of ``pid`` (/proc/PID/task/TID/stat field 19)."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        name = (task / "comm").read_text().strip()
        found[f"{name}/{task.name}"] = int((task / "stat").read_text().rsplit(")", 1)[1].split()[16])
    return found


def test_only_the_import_thread_is_lowered_and_the_engine_serves_at_normal_priority(
    engine: ProcessEngine,
) -> None:
    """Loading a model must not take cores from the models already serving (its imports run at
    nice 10), but the engine it leaves behind must not stay slowed down: Linux nice values are
    per thread, so every thread of the running engine process is at the server's own priority."""
    from backends.llama_cpp.engine_start import IMPORT_NICE, lower_this_thread

    seen: list[int] = []

    def lowered() -> None:
        assert lower_this_thread()
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    worker = threading.Thread(target=lowered)
    worker.start()
    worker.join()
    assert seen == [IMPORT_NICE]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == os.getpriority(os.PRIO_PROCESS, 0) == 0
    threads = _nice_of_threads(engine.pid)
    assert len(threads) >= 2 and set(threads.values()) == {os.nice(0)}, threads
