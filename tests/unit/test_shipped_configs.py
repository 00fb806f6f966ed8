"""Every YAML config we ship must load and pass each backend's option check."""

from pathlib import Path

import pytest

from backends.types import Device
from server.runtime.pool import ModelPool
from server.settings import load_settings

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_is_valid(config: Path, model_path: Path) -> None:
    settings = load_settings(config)
    assert settings.models, "a shipped config should name its models"
    pool = ModelPool.from_settings(settings, Device(kind="cpu"))
    assert [b.spec.id for b in pool] == [m.id for m in settings.models]


def test_there_is_a_shipped_config() -> None:
    assert CONFIGS
