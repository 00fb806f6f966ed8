"""Settings: explicit arguments > environment (QUANTSERVE_*, nested with __) > YAML > defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

from backends.cache import cache_root
from backends.errors import ConfigError, field_problems
from backends.types import ModelFormat
from server.runtime.keep_alive import KeepAlive

DEFAULT_MODELS_DIR = cache_root() / "models"


class ModelConfig(BaseModel):
    """One served model. ``options`` are checked by the chosen backend's own typed model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9._:/-]+$")
    path: Path
    format: ModelFormat | None = None  # None: detected from the path
    backend: Literal["auto", "llama_cpp", "vllm"] = "auto"
    options: dict[str, Any] = Field(default_factory=dict)
    # Per-model limits, refused with a 400 before any work.
    max_prompt_tokens: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)  # cap, and the default when a request sets none
    request_timeout_s: float | None = Field(default=None, gt=0)
    queue_timeout_s: float | None = Field(default=None, gt=0)
    # Residency (docs/models.md): load at start or on the first request; how long to stay loaded
    # when idle. None: the server-wide setting.
    preload: bool | None = None
    keep_alive: KeepAlive | None = None

    @field_validator("path")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUANTSERVE_", env_nested_delimiter="__", extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # API keys: any of these (plus one per line of api_keys_file) opens every route but open_paths.
    api_keys: tuple[str, ...] = ()
    api_keys_file: Path | None = None
    open_paths: tuple[str, ...] = ("/health", "/ready")
    cors_origins: tuple[str, ...] = ()  # CORS is off unless origins are listed ("*" for any)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_messages: int = Field(default=1024, ge=1)
    # Choices per request (OpenAI's n, times the prompts of a completions batch): each is an engine
    # request, so a request asking for more than a model's slots + queue could only ever get 429.
    max_choices: int = Field(default=16, ge=1, le=8192)
    # Whole-request limit (queueing + generation); a model's own request_timeout_s overrides it.
    request_timeout_s: float | None = Field(default=600.0, gt=0)
    # Most time a request may wait for an engine slot (None: only request_timeout_s bounds it);
    # past it the request is dropped from the queue with 503 queue_timeout. A model's own wins.
    queue_timeout_s: float | None = Field(default=None, gt=0)
    # Engine supervision: health checked every health_interval_s; a dead engine is restarted up
    # to max_restarts times (waiting restart_backoff_s, doubled each attempt), then the model is
    # marked unavailable with the reason. The other models keep serving throughout.
    health_interval_s: float = Field(default=1.0, gt=0)
    max_restarts: int = Field(default=3, ge=0)
    restart_backoff_s: float = Field(default=1.0, ge=0)
    models: tuple[ModelConfig, ...] = ()
    # Residency (docs/models.md). preload: every model loads at start (false: on its first
    # request). keep_alive: how long an idle model stays loaded ("5m", seconds; 0: unload after
    # each request; -1: forever). Before a load, the least recently used idle models are unloaded
    # while the new one would exceed max_loaded_models or the memory budget (memory_budget_gib;
    # unset: the host's available memory, as the planner measures it).
    preload: bool = True
    keep_alive: KeepAlive = Field(default=float("inf"))
    max_loaded_models: int | None = Field(default=None, ge=1)
    memory_budget_gib: float | None = Field(default=None, gt=0)
    playground: bool = True  # the chat page at /
    models_dir: Path = DEFAULT_MODELS_DIR
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Seconds between SSE keep-alive comments, so proxies do not cut a slow stream.
    sse_ping_seconds: float = Field(default=15.0, gt=0)
    # On SIGTERM: stop accepting, let in-flight requests finish this long, then cancel the rest.
    shutdown_grace_s: float = Field(default=25.0, ge=0)

    def all_api_keys(self) -> tuple[str, ...]:
        """Keys from settings plus the key file (read once, at app creation)."""
        keys = list(self.api_keys)
        if self.api_keys_file is not None:
            try:
                lines = self.api_keys_file.expanduser().read_text().splitlines()
            except OSError as exc:
                raise ConfigError(f"cannot read api_keys_file {str(self.api_keys_file)!r}: {exc.strerror}") from None
            keys += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        return tuple(keys)


def load_settings(config_file: Path | None = None, **explicit: Any) -> Settings:
    """Build settings from the layers; a typo anywhere fails here, naming the field."""
    yaml_file = config_file

    class _Layered(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if yaml_file is not None:
                sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
            return tuple(sources)

    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file {str(config_file)!r} does not exist")
    try:
        loaded = _Layered(**{k: v for k, v in explicit.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, source=config_file)) from None
    return Settings.model_construct(**{name: getattr(loaded, name) for name in Settings.model_fields})


def describe_validation_error(exc: ValidationError, *, source: Path | None = None) -> str:
    where = f" in {source}" if source else ""
    return f"invalid settings{where}: {field_problems(exc)}"
