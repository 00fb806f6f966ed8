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
import typer.main
import yaml

from server.cli import main as cli
from server.settings import Settings
from tests.deploy_files import (
    COMPOSE,
    ROOT,
    SERVICES,
    STAGES,
    dockerfile_instructions,
    install_sh_cmake_args,
    pinned_llama_cpp,
    seconds,
)

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
    assert source["type"] == "prometheus" and source["isDefault"], "the dashboard's DS_PROMETHEUS picks the default"


def test_dashboard_imports_by_hand_and_by_provisioning() -> None:
    # No hard-coded datasource uid: a hand import asks for the DS_PROMETHEUS input; provisioned,
    # the DS_PROMETHEUS variable resolves to the default Prometheus datasource.
    (wanted,) = DASHBOARD["__inputs"]
    assert wanted["name"] == "DS_PROMETHEUS" and wanted["pluginId"] == "prometheus"
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource" and variables["DS_PROMETHEUS"]["query"] == "prometheus"
    users = list(DASHBOARD["panels"]) + [t for p in DASHBOARD["panels"] for t in p["targets"]]
    users += [v for v in variables.values() if v["type"] == "query"]
    assert {u["datasource"]["uid"] for u in users} == {"${DS_PROMETHEUS}"}


def test_dashboard_has_the_issue_panels_per_model() -> None:
    (variable,) = [v for v in DASHBOARD["templating"]["list"] if v["type"] == "query"]
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


def runtime_lines(stage: str, instruction: str) -> list[str]:
    return [line[len(instruction) + 1 :] for line in STAGES[stage] if line.startswith(instruction + " ")]


def test_gpu_image_offloads_with_a_flag_serve_accepts() -> None:
    (cmd,) = runtime_lines("cuda", "CMD")
    args = json.loads(cmd)
    assert args == ["--n-gpu-layers", "auto"], "the GPU image must not serve on the CPU by default"
    serve = typer.main.get_command(cli.app).commands["serve"]  # type: ignore[attr-defined]
    accepted = {opt for param in serve.params for opt in param.opts}
    assert {a for a in args if a.startswith("--")} <= accepted, f"`quantserve serve` lacks {args[0]}"
    assert not runtime_lines("cpu", "CMD"), "the cpu image serves with the server's defaults"


@pytest.mark.parametrize("stage", ["cpu", "cuda"])
def test_hugging_face_cache_lives_in_the_models_volume(stage: str) -> None:
    (env,) = [line for line in runtime_lines(stage, "ENV") if "HF_HOME=" in line]
    home = re.search(r"HF_HOME=(\S+)", env)
    assert home and Path(home[1]).is_relative_to("/models"), "downloads would not survive a new container"


def test_build_context_holds_only_what_the_images_copy() -> None:
    # .dockerignore is an allow-list: .env files, keys and caches never reach a build layer.
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [ln for ln in lines if ln and not ln.startswith("#")]
    assert rules[0] == "*"
    allowed = {ln[1:] for ln in rules if ln.startswith("!")}
    copied = {
        source
        for lines_ in STAGES.values()
        for line in lines_
        if line.startswith("COPY ") and "--from=" not in line
        for source in line.split()[1:-1]
    }
    assert allowed == copied


def test_no_secret_is_baked_into_a_layer() -> None:
    # Build args and ENV values end up in the image's history: keys come at run time, never here.
    lines = [line for line in dockerfile_instructions() if line.startswith(("ARG ", "ENV "))]  # global ARGs too
    names = {name for line in lines for name in re.findall(r"\b([A-Z][A-Z0-9_]*)(?==|\s|$)", line[4:])}
    assert {"WHEELHOUSE", "PYTHON_IMAGE", "QUANTSERVE_PORT"} <= names
    assert not {n for n in names if re.search(r"TOKEN|SECRET|PASSWORD|API_KEY|CREDENTIAL", n)}


@pytest.mark.parametrize("name", ["quantserve", "quantserve-cpu"])
def test_compose_waits_out_the_shutdown_grace_before_killing(name: str) -> None:
    # uvicorn is given shutdown_grace_s + 5 s to drain (server/cli/main.py); SIGKILL must come later.
    assert seconds(SERVICES[name]["stop_grace_period"]) >= Settings().shutdown_grace_s + 5
