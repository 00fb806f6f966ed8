"""Dockerfile, docker-compose.yml and the Prometheus/Grafana files, checked without a Docker engine.

No engine runs here, so nothing is built or started: these tests hold the files to what can be
known statically (they parse, reference files that exist, bind to loopback, pin what the README
installs, and agree with each other).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy_files import COMPOSE, ROOT, SERVICES, STAGES, install_sh_cmake_args, pinned_llama_cpp

DASHBOARD: dict[str, Any] = json.loads((ROOT / "configs/grafana/dashboards/quantserve.json").read_text())


def env_value(stage: str, name: str) -> str:
    values = [
        m[1] for line in STAGES[stage] if line.startswith("ENV ") for m in [re.search(rf'{name}="([^"]*)"', line)] if m
    ]
    assert len(values) == 1, f"{stage}: {name} set {len(values)} times"
    return values[0]


def test_compose_has_the_four_services() -> None:
    assert set(SERVICES) == {"quantserve", "quantserve-cpu", "prometheus", "grafana"}


def test_gpu_service_reserves_gpus_and_cpu_profile_does_not() -> None:
    (device,) = SERVICES["quantserve"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "profiles" not in SERVICES["quantserve"], "plain `docker compose up` serves on the GPU"
    cpu = SERVICES["quantserve-cpu"]
    assert cpu["profiles"] == ["cpu"] and "deploy" not in cpu
    assert SERVICES["quantserve"]["build"]["target"] == "cuda" and cpu["build"]["target"] == "cpu"
    assert {"cuda", "cpu"} <= set(STAGES)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_ports_are_bound_to_loopback(name: str) -> None:
    ports = SERVICES[name].get("ports", [])
    assert ports, f"{name} publishes nothing"
    for port in ports:
        assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name}: {port!r} is reachable from outside"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_a_healthcheck(name: str) -> None:
    check = SERVICES[name]["healthcheck"]
    assert check["test"][0] == "CMD" and len(check["test"]) > 1
    assert any("/health" in part or "/-/ready" in part for part in check["test"])


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_mounted_files_exist_and_named_volumes_are_declared(name: str) -> None:
    for volume in SERVICES[name].get("volumes", []):
        source = volume.split(":")[0]
        if source.startswith("."):
            assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repository"
        else:
            assert source in COMPOSE["volumes"], f"{name} uses undeclared volume {source}"


def test_prometheus_scrapes_the_quantserve_service() -> None:
    config = yaml.safe_load((ROOT / "configs/prometheus/prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    (target,) = job["static_configs"][0]["targets"]
    host, port = target.split(":")
    aliases = SERVICES["quantserve-cpu"]["networks"]["default"]["aliases"]
    assert host == "quantserve" and host in aliases, "both the GPU and the CPU service answer to the target"
    for name in ("quantserve", "quantserve-cpu"):
        assert any(p.endswith(f":{port}") for p in SERVICES[name]["ports"])


def test_grafana_provisioning_matches_compose_and_dashboard() -> None:
    grafana = SERVICES["grafana"]
    env = grafana["environment"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    datasources = yaml.safe_load((ROOT / "configs/grafana/provisioning/datasources/prometheus.yaml").read_text())
    (source,) = datasources["datasources"]
    assert source["url"] == "${PROMETHEUS_URL}" and env["PROMETHEUS_URL"] == "http://prometheus:9090"
    providers = yaml.safe_load((ROOT / "configs/grafana/provisioning/dashboards/quantserve.yaml").read_text())
    (provider,) = providers["providers"]
    assert provider["options"]["path"] == "${QUANTSERVE_DASHBOARDS}"
    assert mounts["./configs/grafana/dashboards"] == env["QUANTSERVE_DASHBOARDS"]
    assert mounts["./configs/grafana/provisioning"] == "/etc/grafana/provisioning"
    home = Path(env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert (
        str(home.parent) == env["QUANTSERVE_DASHBOARDS"] and (ROOT / "configs/grafana/dashboards" / home.name).is_file()
    )
    used = {t["datasource"]["uid"] for p in DASHBOARD["panels"] for t in p["targets"]}
    assert used == {source["uid"]}, "every panel must use the provisioned datasource"


def test_dashboard_has_the_issue_panels_per_model() -> None:
    (variable,) = DASHBOARD["templating"]["list"]
    assert variable["name"] == "model" and "quantserve_model_info" in variable["query"]["query"]
    exprs = {p["title"]: [t["expr"] for t in p["targets"]] for p in DASHBOARD["panels"]}
    wanted = {
        "Time to first token": ["quantserve_time_to_first_token_seconds_bucket"] * 3,
        "Inter-token latency": ["quantserve_inter_token_latency_seconds_bucket"] * 2,
        "Generated tokens/s": ["quantserve_generation_tokens_total", "quantserve_prompt_tokens_total"],
        "Requests/s by status": ["quantserve_requests_total"],
        "Running vs waiting requests": ["quantserve_num_requests_running", "quantserve_num_requests_waiting"],
        "KV-cache usage": ["quantserve_kv_cache_usage_ratio"],
        "End-to-end request latency": ["quantserve_e2e_request_latency_seconds_bucket"] * 3,
    }
    for title, metrics in wanted.items():
        assert [re.search(r"quantserve_\w+", e)[0] for e in exprs[title]] == metrics, title  # type: ignore[index]
    for title, queries in exprs.items():
        assert all('model=~"$model"' in q for q in queries), f"{title} ignores the model selector"
    quantiles = [re.match(r"histogram_quantile\(([\d.]+)", q) for q in exprs["Time to first token"]]
    assert [m[1] for m in quantiles if m] == ["0.5", "0.95", "0.99"]


def test_dockerfile_pins_the_same_llama_cpp_python_as_pyproject_and_readme() -> None:
    pin = pinned_llama_cpp()
    for stage in ("cpu-build", "cuda-build"):
        installs = [
            word.strip("\"'")
            for line in STAGES[stage]
            if line.startswith("RUN ")
            for word in shlex.split(line[4:], posix=False)
            if "llama-cpp-python" in word
        ]
        assert installs == [pin], f"{stage} installs {installs}, pyproject.toml pins {pin}"
    all_pins = set(re.findall(r"llama-cpp-python==[\d.]+", (ROOT / "Dockerfile").read_text()))
    assert all_pins == {pin}
    assert pin.split("==")[1] in (ROOT / "README.md").read_text(), "the README states the pinned version"


def test_dockerfile_uses_install_sh_cmake_args() -> None:
    base = install_sh_cmake_args()
    assert env_value("cpu-build", "CMAKE_ARGS") == base
    cuda = env_value("cuda-build", "CMAKE_ARGS")
    assert cuda.startswith(base + " ") and "-DGGML_CUDA=on" in cuda.split()


@pytest.mark.parametrize("stage", ["cpu", "cuda"])
def test_runtime_images_are_non_root_with_healthcheck_and_volumes(stage: str) -> None:
    lines = STAGES[stage]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in {"root", "0"}
    (check,) = [line for line in lines if line.startswith("HEALTHCHECK ")]
    assert "/health" in check
    (volume,) = [line for line in lines if line.startswith("VOLUME ")]
    assert set(json.loads(volume[len("VOLUME ") :])) == {"/models", "/configs"}
    assert any(line.startswith("ENTRYPOINT") and "serve" in line for line in lines)
    # The default model is fetched at build time, so the image serves with no network.
    assert any("quantserve models prepare --models-dir /models" in line for line in STAGES[f"{stage}-build"])


def test_dockerfile_copies_only_what_exists() -> None:
    for lines in STAGES.values():
        for line in lines:
            if line.startswith("COPY ") and "--from=" not in line:
                *sources, _dest = line.split()[1:]
                for source in sources:
                    assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
