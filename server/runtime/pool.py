"""The served models: built from settings, started together, looked up by the request's ``model``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

from backends.base import Backend
from backends.device import detect_device
from backends.errors import BackendUnavailable, ConfigError, ModelNotFound
from backends.formats import detect_format
from backends.registry import create_backend
from backends.types import Device, ModelSpec
from server.runtime.model_store import DEFAULT_MODEL_ID, ensure_default_model
from server.runtime.supervisor import RestartPolicy, Supervisor
from server.settings import ModelConfig, Settings

log = logging.getLogger(__name__)

# Backends whose engine enforces queue_timeout_s. vLLM's scheduler owns its queue, and AsyncLLM's
# stream does not say when a request is scheduled (its first output also waits for the prefill).
QUEUE_TIMEOUT_BACKENDS = frozenset({"llama_cpp"})


@dataclass(frozen=True, slots=True)
class ModelLimits:
    """Server-side limits of one model (from its ModelConfig)."""

    max_prompt_tokens: int | None = None
    max_tokens: int | None = None
    request_timeout_s: float | None = None
    queue_timeout_s: float | None = None


@dataclass(frozen=True, slots=True)
class ModelState:
    model_id: str
    ready: bool
    reason: str = ""


def model_configs(settings: Settings) -> list[ModelConfig]:
    """The configured models; with none, the embedded default model (fetched once)."""
    if settings.models:
        return list(settings.models)
    return [ModelConfig(id=DEFAULT_MODEL_ID, path=ensure_default_model(settings.models_dir))]


def model_spec(c: ModelConfig) -> ModelSpec:
    return ModelSpec(
        id=c.id, path=c.path, format=c.format or detect_format(c.path), backend=c.backend, options=dict(c.options)
    )


def _queue_timeout(config: ModelConfig, settings: Settings, backend: Backend) -> float | None:
    """The model's queue timeout; refused when set on a model whose engine cannot enforce it."""
    if backend.name in QUEUE_TIMEOUT_BACKENDS:
        return config.queue_timeout_s or settings.queue_timeout_s
    if config.queue_timeout_s is not None:
        raise ConfigError(
            f"model {config.id!r}: queue_timeout_s is not supported on the {backend.name} backend "
            "(request_timeout_s still applies)"
        )
    if settings.queue_timeout_s is not None:
        log.warning("model %s (%s): queue_timeout_s does not apply; request_timeout_s does", config.id, backend.name)
    return None


class ModelPool:
    """The served models. Once started, a supervisor restarts any engine that dies (see
    ``server.runtime.supervisor``); ``serving`` refuses a model that is down, naming why."""

    def __init__(
        self,
        backends: dict[str, Backend],
        limits: dict[str, ModelLimits] | None = None,
        policy: RestartPolicy | None = None,
    ) -> None:
        self._backends = backends
        self._limits = limits or {}
        self._supervisor = Supervisor(backends, policy or RestartPolicy())

    @classmethod
    def from_settings(cls, settings: Settings, device: Device | None = None) -> ModelPool:
        """Validate every model and its options now (a typo fails here), load nothing yet."""
        device = device or detect_device()
        backends: dict[str, Backend] = {}
        limits: dict[str, ModelLimits] = {}
        for config in model_configs(settings):
            if config.id in backends:
                raise ConfigError(f"model id {config.id!r} is configured twice")
            backend = backends[config.id] = create_backend(model_spec(config), device)
            limits[config.id] = ModelLimits(
                config.max_prompt_tokens,
                config.max_tokens,
                config.request_timeout_s or settings.request_timeout_s,
                _queue_timeout(config, settings, backend),
            )
        policy = RestartPolicy(settings.health_interval_s, settings.max_restarts, settings.restart_backoff_s)
        return cls(backends, limits, policy)

    def limits(self, model_id: str) -> ModelLimits:
        return self._limits.get(model_id, ModelLimits())

    async def start_all(self) -> None:
        try:
            for backend in self._backends.values():
                log.info("loading model %s with %s", backend.spec.id, backend.name)
                await backend.start()
        except BaseException:
            await self.stop_all()
            raise
        self._supervisor.start()

    async def stop_all(self) -> None:
        await self._supervisor.stop()
        for backend in self._backends.values():
            try:
                await backend.stop()
            except Exception:
                log.exception("stopping model %s failed", backend.spec.id)

    def get(self, model_id: str) -> Backend:
        try:
            return self._backends[model_id]
        except KeyError:
            raise ModelNotFound(
                f"The model '{model_id}' does not exist. Served models: {', '.join(self._backends)}.",
                param="model",
            ) from None

    def serving(self, model_id: str) -> Backend:
        """The model's backend for a generation: 404 if unknown, 503 while its engine is down."""
        backend = self.get(model_id)
        reason = self._supervisor.unavailable(model_id)
        if reason is not None:
            raise BackendUnavailable(f"The model '{model_id}' is unavailable: {reason}.")
        return backend

    def __iter__(self) -> Iterator[Backend]:
        return iter(self._backends.values())

    async def states(self) -> list[ModelState]:
        out = []
        for backend in self._backends.values():
            reason = self._supervisor.unavailable(backend.spec.id)
            if reason is not None:
                out.append(ModelState(backend.spec.id, False, reason))
                continue
            try:
                await backend.check_health()
                out.append(ModelState(backend.spec.id, True))
            except BackendUnavailable as exc:
                out.append(ModelState(backend.spec.id, False, exc.message))
        return out
