"""Schemathesis against our own OpenAPI schema, on a real server: no 5xx, every error OpenAI-shaped.

Bounded: a fixed number of examples per operation, derandomized, on a model capped to a few
tokens so valid requests stay cheap.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from schemathesis import GenerationMode

from tests.e2e.conftest import Server

FUZZ_EXAMPLES = 30


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("fuzz")
    config = workdir / "fuzz.yaml"
    config.write_text(
        "models:\n"
        f"  - id: smollm2-135m-instruct\n    path: {model_path}\n"
        "    options: {n_ctx: 512}\n    max_tokens: 4\n    request_timeout_s: 30\n"
    )
    srv = Server(["--config", str(config)], workdir / "server.log")
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def assert_openai_shape(response: Any) -> None:
    body = response.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]


# schemathesis's pytest plugin does not run under pytest 9, so its strategies are driven
# through Hypothesis directly: one test per operation and generation mode.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_no_5xx_and_errors_are_openai_shaped(fuzz_server: Server, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_server.base_url}/openapi.json")
    labels: list[str] = []
    skipped: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        labels.append(operation.label)

        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        @hypothesis.settings(
            max_examples=FUZZ_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        def check(case: Any) -> None:
            response = case.call(base_url=fuzz_server.base_url, timeout=60)
            assert response.status_code < 500, f"{case.method} {case.path}: {response.status_code} {response.text}"
            if response.status_code >= 400:
                assert_openai_shape(response)

        try:
            check()
        except hypothesis.errors.Unsatisfiable:
            # GETs with no inputs, or only a free-form string path part, have no invalid request.
            assert mode is GenerationMode.NEGATIVE and operation.method.upper() == "GET", operation.label
            skipped.append(operation.label)
    assert "POST /v1/chat/completions" in labels and "POST /v1/completions" in labels
    # the server still answers a plain request after the fuzzing
    ok = httpx.post(
        f"{fuzz_server.base_url}/v1/chat/completions",
        json={"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Hi"}]},
        timeout=60,
    )
    assert ok.status_code == 200
