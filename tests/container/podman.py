"""The container test harness: podman with runc, a local Debian base, a wheelhouse, an image.

No registry of container images is reachable here, so the images build from a local stand-in
for ``python:3.11-slim-bookworm`` (tests/container/debian_base.sh, passed as the Dockerfile's
``PYTHON_IMAGE``), and llama-cpp-python comes from the wheel pip already built for the host
venv (a wheelhouse under ~/.cache, mounted into the build) instead of compiling again for ~11
minutes. Podman runs with runc and explicit ulimits: crun and podman's default ulimits are
refused on these machines. Without podman the tests fail and say why; they never skip.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from server.settings import DEFAULT_MODELS_DIR
from tests.deploy_files import ROOT, install_sh_cmake_args, pinned_llama_cpp

log = logging.getLogger(__name__)

CACHE = DEFAULT_MODELS_DIR.parent  # ~/.cache/quantserve, next to the models cache
WHEELHOUSE = CACHE / "wheels"
BASE_IMAGE = "localhost/quantserve-test-base:bookworm"
CPU_IMAGE = "localhost/quantserve:cpu"  # the name docker-compose.yml gives the cpu target
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"
"""


@dataclass(frozen=True)
class Podman:
    """``podman`` with a containers.conf that picks runc and ulimits these machines accept."""

    env: Mapping[str, str] = field(default_factory=dict)

    def run(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["podman", *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **self.env}
        )
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {result.returncode}: {result.stderr[-3000:]}")
        return result


def podman_or_fail(workdir: Path) -> Podman:
    """A working podman, or the test fails saying what is missing (scripts/test.sh installs it)."""
    missing = [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool) is None]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not installed: `apt-get install -y podman runc debootstrap` (scripts/test.sh "
            "does it). Not skipped: without it the images ship unbuilt and unrun.",
            pytrace=False,
        )
    conf = workdir / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    podman = Podman({"CONTAINERS_CONF": str(conf)})
    info = podman.run("info", "--format", "{{.Host.OCIRuntime.Name}}", check=False)
    if info.returncode != 0:
        pytest.fail(f"podman cannot run here: {info.stderr.strip()[-1000:]}", pytrace=False)
    return podman


def base_image(podman: Podman) -> str:
    """The Debian stand-in for python:3.11-slim-bookworm (debootstrap cached under ~/.cache)."""
    script = ROOT / "tests/container/debian_base.sh"
    cmd = ["bash", str(script), BASE_IMAGE, str(CACHE / "containers")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env={**os.environ, **podman.env})
    assert result.returncode == 0, f"{script.name} failed: {result.stderr[-3000:]}"
    return BASE_IMAGE


def wheelhouse() -> Path:
    """The pinned llama-cpp-python as a wheel: pip's cached build when there is one (seconds)."""
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    pin = pinned_llama_cpp()
    env = {**os.environ, "CMAKE_ARGS": install_sh_cmake_args()}  # the portable build, if it must compile
    cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", pin, "-w", str(WHEELHOUSE)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
    assert result.returncode == 0, f"pip wheel {pin}: {result.stderr[-3000:]}"
    return WHEELHOUSE


def build_cpu_image(podman: Podman, base: str, wheels: Path, log_path: Path) -> str:
    """``podman build --target cpu`` of the repository's Dockerfile; the log goes to log_path."""
    started = time.monotonic()
    args = [
        "build",
        "--format=docker",  # OCI images drop HEALTHCHECK
        "--network=host",
        "--target=cpu",
        f"--build-arg=PYTHON_IMAGE={base}",
        "--build-arg=WHEELHOUSE=/wheelhouse",
        f"--volume={wheels}:/wheelhouse:ro",
        f"--tag={CPU_IMAGE}",
        str(ROOT),
    ]
    with log_path.open("w") as out:
        result = subprocess.run(
            ["podman", *args], stdout=out, stderr=subprocess.STDOUT, timeout=2400, env={**os.environ, **podman.env}
        )
    assert result.returncode == 0, f"podman build failed: {log_path.read_text()[-4000:]}"
    log.info("built %s in %.0f s", CPU_IMAGE, time.monotonic() - started)
    return CPU_IMAGE


class Container:
    """One detached container with the API port published on a free loopback port."""

    def __init__(self, podman: Podman, image: str, name: str, host_port: int, args: list[str]) -> None:
        self.podman = podman
        self.name = name
        self.base_url = f"http://127.0.0.1:{host_port}"
        podman.run("run", "--detach", "--name", name, "--publish", f"127.0.0.1:{host_port}:8000", image, *args)

    def logs(self) -> str:
        result = self.podman.run("logs", self.name, check=False)  # uvicorn logs to stderr
        return (result.stdout + result.stderr)[-4000:]

    def state(self) -> dict[str, object]:
        found = self.podman.run("inspect", "--format", "{{json .State}}", self.name)
        state: dict[str, object] = json.loads(found.stdout)
        return state

    def wait_healthy(self, timeout: float = 180.0) -> None:
        """Until the image's own HEALTHCHECK passes and /ready answers 200 through the port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state().get("Status") != "running":
                raise AssertionError(f"container stopped: {self.state()}; logs: {self.logs()}")
            # Runs the HEALTHCHECK command now (podman's timer needs systemd, absent here).
            healthy = self.podman.run("healthcheck", "run", self.name, check=False).returncode == 0
            try:
                ready = httpx.get(f"{self.base_url}/ready", timeout=2).status_code == 200
            except httpx.TransportError:
                ready = False
            if healthy and ready:
                return
            time.sleep(1)
        raise AssertionError(f"not healthy and ready in {timeout} s; logs: {self.logs()}")

    def remove(self) -> None:
        self.podman.run("rm", "--force", "--time", "0", self.name, check=False)
