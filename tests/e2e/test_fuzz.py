"""Schemathesis against our own OpenAPI schema, on a real server: no 5xx, every error in its API's
shape (Anthropic's on /v1/messages, OpenAI's everywhere else).

Bounded: a fixed number of examples per operation, derandomized, on a model capped to a few
tokens so valid requests stay cheap.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from schemathesis import GenerationMode
from starlette.routing import Route

from server.http.app import create_app
from server.settings import load_settings
from tests.e2e.conftest import Server

log = logging.getLogger(__name__)

FUZZ_EXAMPLES = 30
MODEL = "smollm2-135m-instruct"
# Routes FastAPI keeps out of the OpenAPI schema: nothing to fuzz (no inputs), probed once instead.
SCHEMALESS = {
    "GET /openapi.json",
    "GET /docs",
    "GET /docs/oauth2-redirect",
    "GET /redoc",
    "GET /metrics",
    "GET /",  # the playground page
    "GET /playground/{name}",  # its static files
}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("fuzz")
    config = workdir / "fuzz.yaml"
    # A generous time limit: n goes up to 128 choices on 4 slots, which on a CPU shared with
    # other work can take more than 30 s, and a deliberate 504 is not what the fuzzing looks for.
    config.write_text(
        "models:\n"
        f"  - id: {MODEL}\n    path: {model_path}\n"
        "    options: {n_ctx: 512}\n    max_tokens: 4\n    request_timeout_s: 120\n"
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


def assert_anthropic_shape(response: Any) -> None:
    body = response.json()
    assert set(body) == {"type", "error"} and body["type"] == "error", body
    err = body["error"]
    assert set(err) == {"type", "message"}, err
    assert isinstance(err["message"], str) and err["message"]


def assert_error_shape(path: str, response: Any) -> None:
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        assert_anthropic_shape(response)
    else:
        assert_openai_shape(response)


# schemathesis's pytest plugin does not run under pytest 9, so its strategies are driven
# through Hypothesis directly: one test per operation and generation mode.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_no_5xx_and_errors_are_openai_shaped(fuzz_server: Server, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_server.base_url}/openapi.json")
    labels: list[str] = []
    skipped: list[str] = []
    statuses: Counter[int] = Counter()
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
            if mode is GenerationMode.POSITIVE and isinstance(case.body, dict) and "model" in case.body:
                case.body["model"] = MODEL  # past the model lookup, into validation and generation
            response = case.call(base_url=fuzz_server.base_url, timeout=60)
            statuses[response.status_code] += 1
            assert response.status_code < 500, f"{case.method} {case.path}: {response.status_code} {response.text}"
            if response.status_code >= 400:
                assert_error_shape(case.path, response)

        try:
            check()
        except hypothesis.errors.Unsatisfiable:
            # Operations with no inputs, or only a free-form string path part (GET / DELETE by id, the
            # operators' POST /v1/models/{id}/load|unload), have no invalid request.
            bodiless = operation.method.upper() in {"GET", "DELETE"} or operation.label.endswith(("/load", "/unload"))
            assert mode is GenerationMode.NEGATIVE and bodiless, operation.label
            skipped.append(operation.label)
    assert "POST /v1/chat/completions" in labels and "POST /v1/completions" in labels
    assert {"POST /v1/messages", "POST /v1/messages/count_tokens", "POST /v1/responses"} <= set(labels)
    assert {"GET /v1/responses/{response_id}", "DELETE /v1/responses/{response_id}"} <= set(labels)
    log.info(
        "%s: %d operations (%s), %d requests, statuses %s, no example possible: %s",
        mode.value,
        len(labels),
        ", ".join(labels),
        sum(statuses.values()),
        dict(sorted(statuses.items())),
        skipped or "none",
    )
    # the server still answers a plain request after the fuzzing
    ok = httpx.post(
        f"{fuzz_server.base_url}/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]},
        timeout=60,
    )
    assert ok.status_code == 200


def app_routes() -> set[str]:
    """Every "METHOD /path" the app serves, path parameters as the schema writes them."""
    app = create_app(load_settings(None))
    out: set[str] = set()
    for route in app.routes:
        if isinstance(route, Route) and route.methods:
            path = re.sub(r":\w+}", "}", route.path)  # {model_id:path} -> {model_id}
            out |= {f"{method} {path}" for method in route.methods if method != "HEAD"}
    return out


def test_every_route_is_fuzzed_or_probed(fuzz_server: Server) -> None:
    """A route added later is fuzzed as soon as it is in the schema; one hidden from it fails here."""
    schema = schemathesis.openapi.from_url(f"{fuzz_server.base_url}/openapi.json")
    fuzzed = {result.ok().label for result in schema.get_all_operations()}
    served = app_routes()
    assert served - fuzzed - SCHEMALESS == set(), "routes neither in the OpenAPI schema nor probed"
    for label in sorted(served & SCHEMALESS):
        method, path = label.split(" ", 1)
        response = httpx.request(method, f"{fuzz_server.base_url}{path}", timeout=60)
        assert response.status_code < 500, label
