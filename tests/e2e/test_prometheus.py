"""A real Prometheus scrapes a real quantserve under load; every dashboard query must answer.

Needs the ``prometheus`` binary (Debian package ``prometheus``; scripts/test.sh installs it). When
it is missing the test fails: the dashboard would otherwise ship untested.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.conftest import Server, free_port

log = logging.getLogger(__name__)

ROOT = Path(__file__).parents[2]
DASHBOARD = ROOT / "configs/grafana/dashboards/quantserve.json"
SCRAPE_CONFIG = ROOT / "configs/prometheus/prometheus.yml"
MODEL = "smollm2-135m-instruct"
RATE_INTERVAL = "1m"  # what Grafana's $__rate_interval stands for here


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel."""
    dash = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p["targets"]]


def template_queries() -> list[tuple[str, str]]:
    """(variable name, query) of the dashboard's query variables."""
    dash = json.loads(DASHBOARD.read_text())
    return [(v["name"], v["query"]["query"]) for v in dash["templating"]["list"] if v["type"] == "query"]


def label_values(prom: Prometheus, query: str) -> list[str]:
    """Grafana's ``label_values(metric, label)`` through Prometheus's label-values API."""
    match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
    assert match, f"unsupported template query {query!r}"
    resp = httpx.get(f"{prom.url}/api/v1/label/{match[2]}/values", params={"match[]": match[1]}, timeout=10)
    assert resp.status_code == 200, resp.text
    values: list[str] = resp.json()["data"]
    return values


API_KEY = "sk-test"


def concrete(expr: str) -> str:
    return expr.replace("$__rate_interval", RATE_INTERVAL).replace("$model", MODEL)


class Prometheus:
    def __init__(self, binary: str, workdir: Path, target: str) -> None:
        config = yaml.safe_load(SCRAPE_CONFIG.read_text())  # the shipped file, pointed at our server
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        (job,) = config["scrape_configs"]
        job["static_configs"] = [{"targets": [target]}]
        # The server has API keys, and /metrics is not in its open_paths: scrape with a key.
        job["authorization"] = {"type": "Bearer", "credentials": API_KEY}
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log_path = workdir / "prometheus.log"
        self._log = self.log_path.open("wb")
        cmd = [
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={self.url.removeprefix('http://')}",
            "--log.level=warn",
        ]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)

    def query(self, expr: str) -> list[dict[str, Any]]:
        resp = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = resp.json()
        assert resp.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 30.0, show: str = "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited: {self.log_path.read_text()[-2000:]}")
            try:
                if check():
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        seen = f"; {show} = {self.query(show)}" if show else ""
        raise AssertionError(f"timed out waiting for {what}{seen}; prometheus log: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if os.access("/usr/bin/prometheus", os.X_OK) else None)
    if found is None:
        pytest.fail(
            "the prometheus binary is missing: `apt-get install -y prometheus` (scripts/test.sh does it). "
            "This test is not skipped: without it the shipped dashboard is untested.",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("metrics-server")
    options: dict[str, Any] = {"n_ctx": 1024, "n_threads": 2, "parallel": 2}
    config = {"models": [{"id": MODEL, "path": str(model_path), "options": options}]}
    (work / "quantserve.yaml").write_text(yaml.safe_dump(config))
    srv = Server(["--config", str(work / "quantserve.yaml"), "--api-key", API_KEY], work / "server.log")
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def drive_load(base_url: str, prom: Prometheus) -> int:
    """A few streamed and whole chat/text completions, one bad request, one cancelled stream."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "Name three colours."}], "temperature": 0}
    with httpx.Client(base_url=base_url, headers=headers, timeout=120) as c:
        assert c.post("/v1/chat/completions", json={**chat, "max_tokens": 8}).status_code == 200
        # The series now exist; let Prometheus see them before they grow, so rate() has a slope.
        prom.wait_for("the first request in Prometheus", lambda: bool(prom.query("quantserve_requests_total")))
        for i in range(2):
            assert c.post("/v1/chat/completions", json={**chat, "max_tokens": 12 + i}).status_code == 200
            with c.stream("POST", "/v1/chat/completions", json={**chat, "max_tokens": 12, "stream": True}) as r:
                assert r.status_code == 200 and "[DONE]" in r.read().decode()
            time.sleep(1.1)
        cmpl = {"model": MODEL, "prompt": "The sky is", "max_tokens": 8, "stream": True}
        with c.stream("POST", "/v1/completions", json=cmpl) as r:
            assert r.status_code == 200 and "[DONE]" in r.read().decode()
        bad = c.post("/v1/chat/completions", json={**chat, "max_tokens": 100_000})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "context_length_exceeded"
        with c.stream("POST", "/v1/chat/completions", json={**chat, "max_tokens": 300, "stream": True}) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if '"content"' in line:
                    break  # leave mid-stream: closing the response drops the connection
    return 8


def test_every_dashboard_query_answers_from_a_real_prometheus(
    prometheus_binary: str, served: Server, tmp_path: Path
) -> None:
    prom = Prometheus(prometheus_binary, tmp_path, served.base_url.removeprefix("http://"))
    try:
        prom.wait_for("prometheus to be ready", lambda: httpx.get(f"{prom.url}/-/ready", timeout=2).status_code == 200)
        prom.wait_for(
            "a successful scrape", lambda: [r["value"][1] for r in prom.query('up{job="quantserve"}')] == ["1"]
        )
        sent = drive_load(served.base_url, prom)
        total = f'sum(quantserve_requests_total{{model="{MODEL}"}})'
        prom.wait_for(
            f"{sent} requests scraped",
            lambda: [r["value"][1] for r in prom.query(total)] == [str(sent)],
            show="quantserve_requests_total",
        )
        by_status = {
            r["metric"]["status"]: r["value"][1] for r in prom.query("sum by (status) (quantserve_requests_total)")
        }
        assert by_status == {"ok": "6", "invalid_request": "1", "cancelled": "1"}
        # rate() needs two samples of a series: wait until the newest (cancelled) has them.
        per_status = concrete(next(e for t, e in dashboard_queries() if t == "Requests/s by status"))
        prom.wait_for("every status in the requests panel", lambda: len(prom.query(per_status)) == 3, show=per_status)
        results = {expr: prom.query(concrete(expr)) for _, expr in dashboard_queries()}
        variables = {name: label_values(prom, query) for name, query in template_queries()}
    finally:
        prom.stop()
    for expr, res in results.items():  # shown with --log-cli-level=INFO
        log.info("%s -> %s", concrete(expr), [(r["metric"], r["value"][1]) for r in res])
    assert variables == {"model": [MODEL]}, "the $model template variable must list the served model"
    for title, expr in dashboard_queries():
        result = results[expr]
        assert result, f"panel {title!r}: {expr} returned nothing"
        for series in result:
            assert series["metric"].get("model") == MODEL, f"{title}: {series}"
            assert math.isfinite(float(series["value"][1])), f"panel {title!r}: {expr} -> {series}"
