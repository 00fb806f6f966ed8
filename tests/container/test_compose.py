"""docker-compose.yml through a real compose implementation: ``podman-compose config``, per profile.

``config`` parses the file, resolves the anchors, the ``${VAR:-default}`` interpolation and the
profiles, and prints the project it would run: each profile must resolve, and to the services
that profile is meant to start. Needs podman (scripts/test.sh installs it); fails, never skips.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy_files import COMPOSE_FILE, ROOT, SERVICES

PROFILES = sorted({p for service in SERVICES.values() for p in service.get("profiles", [])})


def podman_compose() -> str:
    found = shutil.which("podman-compose", path=str(Path(sys.executable).parent))
    if found is None or shutil.which("podman") is None:
        pytest.fail(
            "podman-compose (the `test` extra) or podman (scripts/test.sh installs it) is missing. "
            "Not skipped: without it docker-compose.yml ships unchecked.",
            pytrace=False,
        )
    return found


def config(profile: str | None) -> dict[str, Any]:
    profile_args = ["--profile", profile] if profile else []
    cmd = [podman_compose(), "-f", str(COMPOSE_FILE), *profile_args, "config"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    project: dict[str, Any] = yaml.safe_load(result.stdout)
    return project


@pytest.mark.parametrize("profile", [None, *PROFILES])
def test_every_profile_resolves_to_its_services(profile: str | None) -> None:
    project = config(profile)
    expected = {name for name, s in SERVICES.items() if not s.get("profiles") or profile in s["profiles"]}
    assert set(project["services"]) == expected
    assert project["name"] == "quantserve"
    for name in expected:
        service = project["services"][name]
        assert service["image"], f"{name} has no image"
        named = {v.split(":")[0] for v in service.get("volumes", []) if not v.startswith(".")}
        assert named <= set(project["volumes"]), f"{name} mounts an undeclared volume"


def test_grafana_password_defaults_and_quantserve_services_get_the_stop_grace() -> None:
    project = config("cpu")
    assert project["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "admin"
    for name in ("quantserve", "quantserve-cpu"):
        if name in project["services"]:
            assert project["services"][name]["stop_grace_period"] == SERVICES[name]["stop_grace_period"]
