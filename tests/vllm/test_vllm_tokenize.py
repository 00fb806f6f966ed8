"""/tokenize and /detokenize on vLLM agree with llama.cpp: the bf16 checkpoint is converted from the
same SmolLM2 GGUF, so both engines must produce the same ids. Embeddings are refused with a reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from backends.base import Backend
from backends.embeddings import EmbeddingRequest, TokenizeRequest
from backends.errors import InvalidRequest, UnsupportedParameter
from backends.registry import create_backend
from backends.types import Message, ModelFormat, ModelSpec
from tests.marks import ENGINE_NOISE
from tests.vllm_engines import CPU, SharedEngines, checkpoint_path

pytestmark = [pytest.mark.slow, *ENGINE_NOISE]

CHAT = (Message("user", "Which city is the capital of France?"),)
OPEN = (*CHAT, Message("assistant", "The capital is"))


@pytest.fixture(scope="module")
async def engines(vllm_engines: SharedEngines) -> AsyncIterator[tuple[Backend, Backend]]:
    """The session's shared bf16 engine beside the GGUF it was converted from."""
    vllm = await vllm_engines.get("bf16")
    gguf = create_backend(
        ModelSpec(id="tok-gguf", path=checkpoint_path("gguf"), format=ModelFormat.GGUF, options={"n_ctx": 1024}), CPU
    )
    await gguf.start()
    try:
        yield vllm, gguf
    finally:
        await gguf.stop()


@pytest.mark.parametrize(
    "req",
    [
        TokenizeRequest(prompt="Hello world, héllo 🙂", return_token_strs=True),
        TokenizeRequest(messages=CHAT, add_special_tokens=False, return_token_strs=True),
        TokenizeRequest(messages=CHAT, add_special_tokens=False, add_generation_prompt=False),
        TokenizeRequest(
            messages=OPEN, add_special_tokens=False, add_generation_prompt=False, continue_final_message=True
        ),
    ],
    ids=["prompt", "chat", "chat-no-generation-prompt", "continue-final-message"],
)
async def test_both_engines_give_the_same_tokens(engines: tuple[Backend, Backend], req: TokenizeRequest) -> None:
    vllm, gguf = engines
    ours, theirs = await vllm.tokenize(req), await gguf.tokenize(req)
    assert ours.tokens == theirs.tokens and len(ours.tokens) > 0
    assert ours.token_strs == theirs.token_strs
    assert await vllm.detokenize(list(ours.tokens)) == await gguf.detokenize(list(theirs.tokens))


async def test_vllm_round_trip_and_bad_ids(engines: tuple[Backend, Backend]) -> None:
    vllm, _ = engines
    text = "Round trip, with ünïcode."
    ids = (await vllm.tokenize(TokenizeRequest(prompt=text))).tokens
    assert await vllm.detokenize(list(ids)) == text
    with pytest.raises(InvalidRequest) as bad:
        await vllm.detokenize([1, 10**9])
    assert bad.value.param == "tokens"
    with pytest.raises(InvalidRequest) as surrogate:  # valid JSON ("\\ud800"), but no tokenizer can encode it
        await vllm.tokenize(TokenizeRequest(messages=(Message("user", "a\ud800b"),)))
    assert surrogate.value.param == "messages"


async def test_vllm_refuses_embeddings_with_the_reason(engines: tuple[Backend, Backend]) -> None:
    vllm, _ = engines
    with pytest.raises(UnsupportedParameter) as refused:
        await vllm.embed(EmbeddingRequest("e", ("hello",)))
    assert refused.value.param == "model" and "pooling" in refused.value.message
