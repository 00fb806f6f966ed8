"""The Dockerfile's ``cpu`` target, built with podman and driven as a user would drive it.

Built from the local Debian stand-in for ``python:3.11-slim-bookworm`` (see podman.py), run
with its API port published, waited on through its own HEALTHCHECK and ``/ready``, then driven
through that port with the official ``openai`` SDK (a plain and a streamed chat) and ``/metrics``,
and stopped with SIGTERM: the container must exit 0 within docker-compose.yml's
``stop_grace_period``. Not covered: the ``cuda`` target (no
NVIDIA base image and no GPU here).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import httpx
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from tests.container.podman import Container, Podman, base_image, build_cpu_image, podman_or_fail, wheelhouse
from tests.deploy_files import SERVICES, seconds
from tests.e2e.conftest import free_port

log = logging.getLogger(__name__)

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"
API_KEY = "sk-container-test"
IMAGE_SIZE_LIMIT = 1.5e9  # bytes: the target for the cpu image
CAPITAL: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Which city is the capital of France?"}]


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    return podman_or_fail(tmp_path_factory.mktemp("podman"))


@pytest.fixture(scope="module")
def image(podman: Podman, tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_cpu_image(podman, base_image(podman), wheelhouse(), tmp_path_factory.mktemp("build") / "build.log")


@pytest.fixture
def container(podman: Podman, image: str) -> Iterator[Container]:
    # Arguments after the image go to `quantserve serve`, as docs/containers.md says.
    box = Container(podman, image, f"quantserve-test-{free_port()}", free_port(), ["--api-key", API_KEY])
    try:
        box.wait_healthy()
        yield box
    finally:
        box.remove()


def test_cpu_image_is_under_the_size_target_and_runs_unprivileged(podman: Podman, image: str) -> None:
    size = int(podman.run("image", "inspect", "--format", "{{.Size}}", image).stdout)
    log.info("%s: %.0f MB", image, size / 1e6)
    assert size < IMAGE_SIZE_LIMIT, f"{image} is {size / 1e9:.2f} GB"
    config = podman.run("image", "inspect", "--format", "{{.Config.User}} {{json .Config.Healthcheck}}", image)
    user, health = config.stdout.split(" ", 1)
    assert user == "quantserve" and "/health" in health


def test_serves_chat_streams_and_metrics_through_the_published_port(container: Container) -> None:
    client = OpenAI(base_url=f"{container.base_url}/v1", api_key=API_KEY, max_retries=0, timeout=120)
    assert [m.id for m in client.models.list()] == [MODEL]
    plain = client.chat.completions.create(model=MODEL, messages=CAPITAL, temperature=0, max_tokens=40)
    assert "Paris" in (plain.choices[0].message.content or "")
    stream = client.chat.completions.create(
        model=MODEL,
        messages=CAPITAL,
        temperature=0,
        max_tokens=40,
        stream=True,
    )
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert streamed == plain.choices[0].message.content, "greedy: the stream says what the plain reply said"
    metrics = httpx.get(f"{container.base_url}/metrics", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10)
    assert metrics.status_code == 200
    served = [
        sample.value
        for family in text_string_to_metric_families(metrics.text)
        for sample in family.samples
        if sample.name == "quantserve_requests_total" and sample.labels.get("model") == MODEL
        if sample.labels.get("status") == "ok"
    ]
    assert sum(served) == 2, metrics.text[-2000:]
    assert httpx.get(f"{container.base_url}/metrics", timeout=10).status_code == 401, "metrics need the key"


def test_sigterm_stops_it_cleanly_within_the_grace_period(podman: Podman, container: Container) -> None:
    # Draining streams in flight is tests/e2e/test_shutdown.py's subject; here the signal must
    # reach the server as PID 1 of the container and end it with exit code 0 before the SIGKILL.
    grace = seconds(SERVICES["quantserve-cpu"]["stop_grace_period"])
    client = OpenAI(base_url=f"{container.base_url}/v1", api_key=API_KEY, max_retries=0, timeout=120)
    client.chat.completions.create(model=MODEL, messages=CAPITAL, max_tokens=4)
    started = time.monotonic()
    podman.run("kill", "--signal", "TERM", container.name)
    podman.run("wait", "--condition", "stopped", container.name, timeout=grace + 10)
    elapsed = time.monotonic() - started
    log.info("stopped %.1f s after SIGTERM (grace %.0f s)", elapsed, grace)
    assert container.state()["ExitCode"] == 0, container.logs()
    assert elapsed < grace, f"exit took {elapsed:.1f} s, past the {grace:.0f} s grace period"
    assert "Finished server process" in container.logs()
