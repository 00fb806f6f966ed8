import pytest
from pydantic import ValidationError

from backends.errors import UnsupportedParameter
from backends.types import JsonConstraint, ToolCall, ToolCallConstraint
from server.openai.protocol import ChatCompletionRequest, CompletionRequest
from server.openai.translate import chat_request, choices, completion_requests

MSG = [{"role": "user", "content": "hi"}]


def chat(**fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": MSG, **fields})


def test_sampling_fields_are_carried_over() -> None:
    req = chat_request(
        chat(
            max_completion_tokens=7,
            temperature=0,
            top_p=0.5,
            top_k=20,
            min_p=0.1,
            stop="END",
            seed=2**40 + 3,
            presence_penalty=0.5,
            frequency_penalty=-0.5,
            repetition_penalty=1.1,
        ),
        "r1",
    )
    s = req.sampling
    assert (s.max_tokens, s.temperature, s.top_p, s.top_k, s.min_p) == (7, 0, 0.5, 20, 0.1)
    assert s.stop == ("END",)
    assert s.seed == (2**40 + 3) % 2**32
    assert (s.presence_penalty, s.frequency_penalty, s.repeat_penalty) == (0.5, -0.5, 1.1)


def test_openai_defaults_when_fields_are_absent() -> None:
    s = chat_request(chat(), "r").sampling
    assert (s.max_tokens, s.temperature, s.top_p, s.top_k, s.min_p, s.stop, s.seed) == (
        None,
        1.0,
        1.0,
        0,
        0.0,
        (),
        None,
    )


def test_ignore_eos_is_carried_and_off_by_default() -> None:
    assert chat_request(chat(ignore_eos=True), "r").sampling.ignore_eos is True
    assert chat_request(chat(), "r").sampling.ignore_eos is False
    assert completion_requests(CompletionRequest(model="m", prompt="hi", ignore_eos=True), "r")[0].sampling.ignore_eos


def test_negative_top_k_means_disabled() -> None:
    assert chat_request(chat(top_k=-1), "r").sampling.top_k == 0


def test_developer_role_becomes_system_and_text_parts_are_joined() -> None:
    req = chat_request(
        ChatCompletionRequest.model_validate(
            {
                "model": "m",
                "messages": [
                    {"role": "developer", "content": "be brief"},
                    {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                ],
            }
        ),
        "r",
    )
    assert req.messages is not None
    assert [(m.role, m.content) for m in req.messages] == [("system", "be brief"), ("user", "ab")]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("functions", [{"name": "f"}]),
        ("function_call", "auto"),
        ("modalities", ["text", "audio"]),
        ("audio", {"voice": "x"}),
    ],
)
def test_unimplemented_chat_fields_are_refused_by_name(field: str, value: object) -> None:
    with pytest.raises(UnsupportedParameter) as err:
        chat_request(chat(**{field: value}), "r")
    assert err.value.param == field


@pytest.mark.parametrize(
    ("field", "value"),
    [("tool_choice", "none"), ("response_format", {"type": "text"}), ("n", 1), ("logprobs", False), ("user", "u")],
)
def test_fields_asking_for_default_behaviour_are_accepted(field: str, value: object) -> None:
    req = chat_request(chat(**{field: value}), "r")
    assert req.constraint is None and req.tools == () and req.sampling.logprobs is None


TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
TOOL_G = {"type": "function", "function": {"name": "g"}}


def test_tool_choice_decides_the_constraint() -> None:
    auto = chat_request(chat(tools=[TOOL, TOOL_G]), "r")
    assert isinstance(auto.constraint, ToolCallConstraint) and not auto.constraint.required
    assert [t.name for t in auto.tools] == ["f", "g"] and auto.constraint.parallel
    required = chat_request(chat(tools=[TOOL], tool_choice="required", parallel_tool_calls=False), "r")
    assert isinstance(required.constraint, ToolCallConstraint)
    assert required.constraint.required and not required.constraint.parallel
    named = chat_request(chat(tools=[TOOL, TOOL_G], tool_choice={"type": "function", "function": {"name": "g"}}), "r")
    assert isinstance(named.constraint, ToolCallConstraint) and named.constraint.required
    assert [t.name for t in named.constraint.tools] == ["g"] and [t.name for t in named.tools] == ["f", "g"]
    none = chat_request(chat(tools=[TOOL], tool_choice="none"), "r")
    assert none.constraint is None and none.tools == ()


def test_response_format_and_sampling_extras() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    req = chat_request(
        chat(
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
            logprobs=True,
            top_logprobs=3,
            logit_bias={"17": -100, "5": 2.5},
        ),
        "r",
    )
    assert req.constraint == JsonConstraint(schema)
    assert req.sampling.logprobs == 3 and req.sampling.logit_bias == ((17, -100.0), (5, 2.5))
    assert chat_request(chat(response_format={"type": "json_object"}), "r").constraint == JsonConstraint()


def test_n_choices_get_distinct_ids_and_seeds() -> None:
    base = chat_request(chat(seed=41), "r")
    many = choices(base, 3)
    assert [c.request_id for c in many] == ["r-0", "r-1", "r-2"]
    assert [c.sampling.seed for c in many] == [41, 42, 43]
    assert choices(base, 1) == [base]


def test_tool_turns_are_carried_into_the_request() -> None:
    req = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [
                *MSG,
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                },
                {"role": "tool", "content": "42", "tool_call_id": "c1"},
            ],
        }
    )
    out = chat_request(req, "r")
    assert out.messages is not None
    assert out.messages[1].tool_calls == (ToolCall("c1", "f", "{}"),)
    assert (out.messages[2].role, out.messages[2].tool_call_id) == ("tool", "c1")


def test_completion_defaults_to_16_tokens_and_unwraps_single_prompt_list() -> None:
    (req,) = completion_requests(CompletionRequest.model_validate({"model": "m", "prompt": ["Once"]}), "r")
    assert req.prompt == "Once"
    assert req.sampling.max_tokens == 16


@pytest.mark.parametrize(
    ("field", "value"),
    [("best_of", 2)],
)
def test_unimplemented_completion_fields_are_refused_by_name(field: str, value: object) -> None:
    body = {"model": "m", "prompt": "x", field: value}
    with pytest.raises(UnsupportedParameter) as err:
        completion_requests(CompletionRequest.model_validate(body), "r")
    assert err.value.param == field


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "messages": []},
        {"model": "m", "messages": [{"role": "wizard", "content": "x"}]},
        {"model": "m", "messages": MSG, "max_tokens": 0},
        {"model": "m", "messages": MSG, "max_tokens": -5},
        {"model": "m", "messages": MSG, "max_tokens": 10**12},
        {"model": "m", "messages": MSG, "temperature": 3},
        {"model": "m", "messages": MSG, "stream_options": {"include_usage": True}},
        {"model": "m", "messages": MSG, "stop": [""]},
        {"model": "m", "messages": MSG, "max_tokens": 5, "max_completion_tokens": 6},
        {"model": "m", "messages": MSG, "surprise": 1},
        {"messages": MSG},
    ],
)
def test_invalid_requests_fail_validation(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate(body)


def test_completion_prompt_shapes_become_one_request_each() -> None:
    def reqs(prompt: object) -> list[object]:
        body = CompletionRequest.model_validate({"model": "m", "prompt": prompt})
        return [r.prompt for r in completion_requests(body, "r")]

    assert reqs("a") == ["a"]
    assert reqs(["a", "b"]) == ["a", "b"]
    assert reqs([1, 2, 3]) == [(1, 2, 3)]
    assert reqs([[1, 2], [3]]) == [(1, 2), (3,)]
    body = CompletionRequest.model_validate({"model": "m", "prompt": ["a", "b"]})
    assert [r.request_id for r in completion_requests(body, "r")] == ["r-p0", "r-p1"]
