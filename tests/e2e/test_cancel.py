"""A client that drops a stream, or a whole (non-streamed) request, mid-generation stops its
generation: seen server-side in /metrics of a real server process. The generated-token counter
stops growing a few tokens after the drop (the request asked for 2000), the request is counted as
cancelled, and the running and waiting gauges return to 0.

The exact one-engine-step bound is checked in process on the engine's own counter
(tests/engine/test_batched_engine.py::test_cancel_frees_slot_and_stops_compute); over HTTP the
scrape that reads the counter before the drop adds a little slack.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import Server

KEY = {"Authorization": "Bearer sk-test"}
BODY = {
    "model": "smollm2-135m-instruct",
    # Greedy, this prompt runs to any max_tokens (measured: 2000 tokens, finish "length").
    "messages": [{"role": "user", "content": "List 300 different animals, one per line."}],
    "temperature": 0,
    "max_tokens": 2000,
}
# Tokens the engine may still count after the drop: those of the scrape-to-close gap plus the
# one step in which the server notices. Far below what the request asked for.
SLACK = 16


def scrape(server: Server) -> dict[str, float]:
    text = httpx.get(f"{server.base_url}/metrics", headers=KEY, timeout=30).text
    out = {"generated": 0.0, "running": 0.0, "waiting": 0.0, "cancelled": 0.0}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "quantserve_generation_tokens_total":
                out["generated"] += s.value
            elif s.name == "quantserve_num_requests_running":
                out["running"] += s.value
            elif s.name == "quantserve_num_requests_waiting":
                out["waiting"] += s.value
            elif s.name == "quantserve_requests_total" and s.labels["status"] == "cancelled":
                out["cancelled"] += s.value
    return out


def settled(server: Server) -> dict[str, float]:
    """Metrics once nothing runs or waits (bounded wait)."""
    for _ in range(600):
        m = scrape(server)
        if m["running"] == 0 and m["waiting"] == 0:
            return m
        time.sleep(0.1)
    raise AssertionError(f"gauges never returned to 0: {m}")


def generating(server: Server, since: float) -> float:
    """Wait until the request is well under way; the counter just before the drop."""
    for _ in range(1200):
        m = scrape(server)
        if m["generated"] - since >= 5:
            return m["generated"]
        time.sleep(0.05)
    raise AssertionError("the request never started generating")


@pytest.fixture
def baseline(server: Server) -> Iterator[dict[str, float]]:
    before = settled(server)
    yield before
    after = settled(server)
    assert after["cancelled"] - before["cancelled"] == 1
    time.sleep(0.5)  # several engine steps: nothing is generated for nobody
    assert scrape(server)["generated"] == after["generated"]


def test_dropping_a_stream_stops_its_generation(server: Server, baseline: dict[str, float]) -> None:
    with httpx.stream(
        "POST", f"{server.base_url}/v1/chat/completions", json={**BODY, "stream": True}, headers=KEY, timeout=120
    ) as resp:
        assert resp.status_code == 200
        seen = 0
        for line in resp.iter_lines():
            seen += line.startswith("data: ")
            if seen >= 6:  # the role chunk and five tokens
                break
        at_drop = generating(server, baseline["generated"])
    # leaving the block closed the connection mid-stream
    after = settled(server)
    assert after["generated"] - at_drop <= SLACK, (at_drop, after)


def test_dropping_a_non_streamed_request_stops_its_generation(server: Server, baseline: dict[str, float]) -> None:
    body = json.dumps(BODY).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Authorization: Bearer sk-test\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head.encode() + body)
        at_drop = generating(server, baseline["generated"])
    # the socket is closed: the client went away long before its 2000 tokens
    after = settled(server)
    assert after["generated"] - at_drop <= SLACK, (at_drop, after)
