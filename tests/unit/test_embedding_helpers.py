"""The pure parts of embeddings and tokenization: packing, normalising, pooling choice, checks."""

from __future__ import annotations

import array
import math

import pytest

from backends.checks import check_token_ids
from backends.embeddings import (
    check_dimensions,
    check_input_lengths,
    cut_after_final_message,
    input_tokens,
)
from backends.errors import ContextLengthExceeded, InvalidRequest, UnsupportedParameter
from backends.llama_cpp.embedding import pack, resolve_pooling, unit_float32
from server.openai.embedding_protocol import EmbeddingBody


def test_pack_keeps_order_and_fits_every_group() -> None:
    inputs = [[1] * n for n in (3, 4, 2, 6, 1, 1, 1)]
    groups = list(pack(inputs, max_tokens=6, max_seqs=2))
    assert [x for g in groups for x in g] == inputs
    assert all(sum(map(len, g)) <= 6 and len(g) <= 2 for g in groups)
    assert [len(g) for g in groups] == [1, 2, 1, 2, 1]


def test_unit_float32_is_unit_length_and_float32_exact() -> None:
    v = unit_float32([3.0, 4.0, 12.0])
    assert math.isclose(math.fsum(x * x for x in v), 1.0, rel_tol=1e-6)
    assert list(v) == list(array.array("f", v))  # already float32: base64 carries the same numbers
    assert unit_float32([0.0, 0.0]) == (0.0, 0.0)


@pytest.mark.parametrize(
    ("choice", "metadata", "expected"),
    [
        ("model", {"general.architecture": "llama"}, "mean"),  # a chat model declares none
        ("model", {"general.architecture": "bert", "bert.pooling_type": "2"}, "cls"),
        ("model", {"general.architecture": "qwen3", "qwen3.pooling_type": "3"}, "last"),
        ("model", {"general.architecture": "bert", "bert.pooling_type": "0"}, "mean"),  # none: not usable
        ("model", {"general.architecture": "bert", "bert.pooling_type": "4"}, "mean"),  # rank: a reranker's
        ("last", {"general.architecture": "bert", "bert.pooling_type": "2"}, "last"),  # the option wins
    ],
)
def test_pooling_choice(choice: str, metadata: dict[str, str], expected: str) -> None:
    assert resolve_pooling(choice, metadata) == expected


def test_input_tokens_checks_empty_and_out_of_vocabulary() -> None:
    assert input_tokens(["ab", (3, 4)], lambda s: [ord(c) for c in s], n_vocab=200) == [[97, 98], [3, 4]]
    with pytest.raises(InvalidRequest, match=r"input\[1\] is empty"):
        input_tokens(["a", ""], lambda s: [1] * len(s), n_vocab=10)
    with pytest.raises(InvalidRequest, match="token id 10"):
        input_tokens([(1, 10)], lambda s: [], n_vocab=10)


def test_length_dimension_and_token_checks() -> None:
    check_input_lengths([[1] * 8], n_ctx=8, cap=None)
    with pytest.raises(ContextLengthExceeded) as exc:
        check_input_lengths([[1], [1] * 9], n_ctx=8, cap=None)
    assert exc.value.param == "input" and "input[1] has 9 tokens" in exc.value.message
    with pytest.raises(ContextLengthExceeded, match="per-input limit"):
        check_input_lengths([[1] * 5], n_ctx=8, cap=4)
    check_dimensions(None, 576)
    check_dimensions(576, 576)
    with pytest.raises(UnsupportedParameter):
        check_dimensions(64, 576)
    with pytest.raises(InvalidRequest) as bad:
        check_token_ids([0, -3], 10)
    assert bad.value.param == "tokens"


def test_continue_final_message_cuts_after_the_last_text() -> None:
    rendered = "<s>user\nHi</s>\n<s>assistant\nThe answer is </s>\n"
    assert cut_after_final_message(rendered, "The answer is ") == "<s>user\nHi</s>\n<s>assistant\nThe answer is"
    with pytest.raises(InvalidRequest):
        cut_after_final_message(rendered, "not there")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("a", ("a",)), (["a", "b"], ("a", "b")), ([1, 2], ((1, 2),)), ([[1], [2, 3]], ((1,), (2, 3)))],
)
def test_openais_four_input_shapes(value: object, expected: tuple[object, ...]) -> None:
    assert EmbeddingBody.model_validate({"model": "m", "input": value}).inputs() == expected
