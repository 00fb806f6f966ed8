"""The served models: built from settings, looked up by the request's ``model``, loaded at start or
on demand, and unloaded when idle or to make room (``server.runtime.residency``).

A request holds its model through a ``Lease`` from ``acquire`` (which loads the model first when
it is not loaded, the request waiting at most its queue timeout) until its response is sent; a
model with leases out is never unloaded. Loads happen one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from backends.base import Backend
from backends.device import detect_device
from backends.errors import BackendStartupError, BackendUnavailable, ConfigError, ModelNotFound, QueueTimeout
from backends.formats import detect_format
from backends.registry import create_backend
from backends.types import Device, ModelSpec
from server.runtime.model_store import DEFAULT_MODEL_ID, ensure_default_model
from server.runtime.residency import Lease, NoRoomToLoad, Resident, RoomRule, budget_bytes
from server.runtime.supervisor import RestartPolicy, Supervisor, describe
from server.settings import ModelConfig, Settings

log = logging.getLogger(__name__)

# Backends whose engine enforces queue_timeout_s. vLLM's scheduler owns its queue, and AsyncLLM's
# stream does not say when a request is scheduled (its first output also waits for the prefill).
QUEUE_TIMEOUT_BACKENDS = frozenset({"llama_cpp"})
REAP_INTERVAL_S = 0.25  # how often idle models are checked against their keep_alive


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


@dataclass(frozen=True, slots=True)
class Residency:
    """How models come and go (the settings' preload / keep_alive / max_loaded_models / budget)."""

    preload: dict[str, bool] = field(default_factory=dict)  # model id -> load at start (default True)
    keep_alive: dict[str, float] = field(default_factory=dict)  # model id -> seconds (default forever)
    room: RoomRule = field(default_factory=RoomRule)
    load_wait_s: float | None = None  # longest a request waits for its model to load (None: no limit)


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
    """The served models. A supervisor restarts any loaded engine that dies (see
    ``server.runtime.supervisor``); a model that is down answers 503, naming why."""

    def __init__(
        self,
        backends: dict[str, Backend],
        limits: dict[str, ModelLimits] | None = None,
        policy: RestartPolicy | None = None,
        residency: Residency | None = None,
    ) -> None:
        self._backends = backends
        self._limits = limits or {}
        self._supervisor = Supervisor(backends, policy or RestartPolicy())
        self._residency = residency or Residency()
        self._residents = {
            model_id: Resident(backend, self._residency.keep_alive.get(model_id, math.inf))
            for model_id, backend in backends.items()
        }
        self._load_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None

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
        configs = model_configs(settings)
        residency = Residency(
            preload={c.id: settings.preload if c.preload is None else c.preload for c in configs},
            keep_alive={c.id: settings.keep_alive if c.keep_alive is None else c.keep_alive for c in configs},
            room=RoomRule(settings.max_loaded_models, budget_bytes(settings.memory_budget_gib)),
            load_wait_s=settings.queue_timeout_s or settings.request_timeout_s,
        )
        return cls(backends, limits, policy, residency)

    def limits(self, model_id: str) -> ModelLimits:
        return self._limits.get(model_id, ModelLimits())

    # ---- start and stop ---------------------------------------------------------------------
    async def start_all(self) -> None:
        """Load the models marked to preload (all, by default), then supervise them."""
        try:
            for model_id, resident in self._residents.items():
                if self._residency.preload.get(model_id, True):
                    await self._load(resident)
        except BaseException:
            await self.stop_all()
            raise
        self._reaper = asyncio.create_task(self._reap(), name="unload-idle-models")
        self._spawn(self._plan_all())

    async def _plan_all(self) -> None:
        """Read every model's memory estimate ahead, so neither /v1/models nor a first request waits on it."""
        for resident in self._residents.values():
            await resident.plan()

    async def stop_all(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for task in list(self._tasks):
            task.cancel()
        await self._supervisor.stop()
        for backend in self._backends.values():
            try:
                await backend.stop()
            except Exception:
                log.exception("stopping model %s failed", backend.spec.id)

    # ---- lookups ----------------------------------------------------------------------------
    def get(self, model_id: str) -> Backend:
        return self.resident(model_id).backend

    def resident(self, model_id: str) -> Resident:
        try:
            return self._residents[model_id]
        except KeyError:
            raise ModelNotFound(
                f"The model '{model_id}' does not exist. Served models: {', '.join(self._backends)}.",
                param="model",
            ) from None

    def residents(self) -> list[Resident]:
        return list(self._residents.values())

    def __iter__(self) -> Iterator[Backend]:
        return iter(self._backends.values())

    def serving(self, model_id: str) -> Backend:
        """The model's backend if it can serve right now: 404 if unknown, 503 while down or unloaded."""
        resident = self.resident(model_id)
        reason = self._supervisor.unavailable(model_id)
        if reason is not None:
            raise BackendUnavailable(f"The model '{model_id}' is unavailable: {reason}.")
        if resident.state != "loaded":
            raise BackendUnavailable(f"The model '{model_id}' is not loaded.")
        return resident.backend

    # ---- leases -----------------------------------------------------------------------------
    async def acquire(self, model_id: str, keep_alive: float | None = None) -> Lease:
        """Hold the model for one request, loading it first if needed. ``keep_alive`` (seconds)
        replaces the model's own from this request on, as in Ollama."""
        resident = self.resident(model_id)
        if resident.state != "loaded":
            await self._wait_loaded(resident)
        self.serving(model_id)  # 503 while its engine is down or restarting
        resident.in_use += 1
        resident.last_used = time.monotonic()
        return Lease(resident, keep_alive, self._release)

    def _release(self, resident: Resident, keep_alive: float | None) -> None:
        resident.in_use -= 1
        resident.last_used = time.monotonic()
        if keep_alive is not None:
            resident.keep_alive = keep_alive
        if resident.in_use == 0 and resident.keep_alive == 0:
            self._spawn(self._unload_if_idle(resident, "keep_alive"))

    async def _wait_loaded(self, resident: Resident) -> None:
        """Load the model (or wait for the load under way), at most the model's queue timeout."""
        resident.load_waits += 1
        resident.waiting += 1
        limits = self.limits(resident.model_id)
        wait_s = limits.queue_timeout_s or self._residency.load_wait_s
        try:
            async with asyncio.timeout(wait_s):
                while resident.state != "loaded":
                    if resident.state == "available":
                        self._begin_load(resident)
                    await resident.loaded.wait()
                    if resident.state == "available" and resident.load_error is not None:
                        if resident.no_room:  # already says what stands in the way
                            raise NoRoomToLoad(resident.load_error)
                        raise BackendStartupError(
                            f"The model '{resident.model_id}' could not be loaded: {resident.load_error}"
                        )
        except TimeoutError:
            raise QueueTimeout(
                f"The model '{resident.model_id}' did not finish loading within {wait_s:g} s; retry shortly.",
                retry_after=5,
            ) from None
        finally:
            resident.waiting -= 1

    def _begin_load(self, resident: Resident) -> None:
        """Mark the model loading and load it in a task of its own, so that a waiting client
        that leaves does not cancel the load."""
        resident.state, resident.load_error = "loading", None
        resident.loaded.clear()
        self._spawn(self._load_logged(resident))

    # ---- loading and unloading --------------------------------------------------------------
    async def load(self, model_id: str) -> Resident:
        """Load now (operators); already loaded is fine."""
        resident = self.resident(model_id)
        await self._load(resident)
        return resident

    async def unload(self, model_id: str) -> Resident:
        """Unload now if idle (operators); a busy model unloads when its requests finish."""
        resident = self.resident(model_id)
        resident.keep_alive = 0.0
        await self._unload_if_idle(resident, "operator")
        return resident

    async def _load_logged(self, resident: Resident) -> None:
        try:
            await self._load(resident)
        except Exception as exc:  # the waiting requests report it
            log.error("model %s could not be loaded: %s", resident.model_id, describe(exc))

    async def _load(self, resident: Resident) -> None:
        async with self._load_lock:
            if resident.state == "loaded":
                return
            resident.state, resident.load_error = "loading", None
            resident.loaded.clear()
            started = time.perf_counter()  # the load time counts planning and making room
            try:
                for other in self._residents.values():
                    await other.plan()
                await self._make_room(resident)
                backend = resident.backend
                log.info("loading model %s with %s", backend.spec.id, backend.name)
                await backend.start()
            except BaseException as exc:
                resident.no_room = isinstance(exc, NoRoomToLoad)
                resident.state = "available"
                resident.load_error = exc.message if isinstance(exc, NoRoomToLoad) else describe(exc)
                raise
            finally:
                resident.loaded.set()
            took = time.perf_counter() - started
            resident.state, resident.last_used = "loaded", time.monotonic()
            # Each load starts from the configured keep_alive; a request's own applies from its end.
            resident.keep_alive = self._residency.keep_alive.get(resident.model_id, math.inf)
            resident.loads += 1
            resident.load_seconds += took
            resident.last_load_s = took
            log.info("model %s loaded in %.2f s", resident.model_id, took)
            self._supervisor.watch(resident.model_id)

    async def _make_room(self, resident: Resident) -> None:
        """Unload the idle models that stand in the way (the caller holds the load lock)."""
        while victims := self._residency.room.victims(resident, self._residents.values()):
            for victim in victims:
                if victim.in_use or victim.state != "loaded":
                    break  # a request took it meanwhile: plan again
                log.info("unloading idle model %s to make room for %s", victim.model_id, resident.model_id)
                victim.evictions += 1
                await self._unload(victim, "evicted")
            else:
                return

    async def _unload_if_idle(self, resident: Resident, reason: str) -> None:
        async with self._load_lock:
            if resident.state == "loaded" and resident.in_use == 0:
                await self._unload(resident, reason)

    async def _unload(self, resident: Resident, reason: str) -> None:
        """Unload (the caller holds the load lock and checked it is idle). The state changes first,
        so a request arriving meanwhile waits for a fresh load instead of using a stopping engine."""
        resident.state = "available"
        resident.unloads[reason] = resident.unloads.get(reason, 0) + 1
        await self._supervisor.unwatch(resident.model_id)
        await resident.backend.stop()
        log.info("model %s unloaded (%s)", resident.model_id, reason)

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL_S)
            now = time.monotonic()
            for resident in self._residents.values():
                if resident.expires_in(now) == 0.0:
                    await self._unload_if_idle(resident, "keep_alive")

    def _spawn(self, work: object) -> None:
        assert asyncio.iscoroutine(work)
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- health -----------------------------------------------------------------------------
    async def states(self) -> list[ModelState]:
        """Readiness per model: a model not loaded is ready (it loads on its first request)."""
        out = []
        for resident in self._residents.values():
            model_id, backend = resident.model_id, resident.backend
            reason = self._supervisor.unavailable(model_id)
            if reason is not None:
                out.append(ModelState(model_id, False, reason))
            elif resident.state != "loaded":
                out.append(ModelState(model_id, True, f"{resident.state}; loads on its first request"))
            else:
                try:
                    await backend.check_health()
                    out.append(ModelState(model_id, True))
                except BackendUnavailable as exc:
                    out.append(ModelState(model_id, False, exc.message))
        return out
