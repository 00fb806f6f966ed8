"""The deployment files as data: Dockerfile stages, docker-compose.yml, the pins they must share.

One parser for the static checks (tests/unit) and the real container tests (tests/container).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def dockerfile_instructions() -> list[str]:
    """Every instruction of the Dockerfile, global ARGs included (continuations joined, no comments)."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def dockerfile_stages() -> dict[str, list[str]]:
    """Stage name -> its instructions."""
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in dockerfile_instructions():
        match = re.match(r"FROM\s+\S+\s+AS\s+(\S+)$", line, re.IGNORECASE)
        if match:
            current = stages.setdefault(match[1], [])
        current.append(line)
    return stages


STAGES = dockerfile_stages()


def pinned_llama_cpp() -> str:
    # A regex, not tomllib: the project supports Python 3.10.
    pins = re.findall(r'"(llama-cpp-python[^"]*)"', (ROOT / "pyproject.toml").read_text())
    assert len(pins) == 1 and re.fullmatch(r"llama-cpp-python==[\d.]+", pins[0]), pins
    return str(pins[0])


def install_sh_cmake_args() -> str:
    match = re.search(r'CMAKE_ARGS="\$\{CMAKE_ARGS:-([^}]*)\}"', (ROOT / "scripts/install.sh").read_text())
    assert match, "scripts/install.sh no longer sets a default CMAKE_ARGS"
    return match[1]


def seconds(duration: str) -> float:
    """A compose duration such as ``35s`` or ``1m30s``."""
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert parts and duration, f"unsupported duration {duration!r}"
    return 60.0 * int(parts[1] or 0) + int(parts[2] or 0)
