"""Engine supervision: a model whose engine dies is restarted, a bounded number of times with
backoff, then marked unavailable with the reason. The other models keep serving throughout.

Each served model has one watch task that calls ``Backend.check_health`` every
``interval_s``. A failed check starts recovery: ``stop()`` then ``start()`` the backend, waiting
``backoff_s`` (doubled each attempt, capped) before each try. While a model recovers, or after it
gave up, requests for it get 503 ``backend_unavailable`` and ``/ready`` says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from backends.base import Backend
from backends.errors import QuantserveError

log = logging.getLogger(__name__)

State = Literal["serving", "restarting", "failed"]


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    interval_s: float = 1.0
    max_restarts: int = 3
    backoff_s: float = 1.0
    backoff_cap_s: float = 30.0
    # A model that has served this long since its last restart gets a fresh restart budget, so a
    # rare crash never uses up the budget for good, while a crash loop still ends.
    reset_after_s: float = 300.0

    def backoff(self, attempt: int) -> float:
        return float(min(self.backoff_cap_s, self.backoff_s * 2 ** (attempt - 1)))


@dataclass(slots=True)
class ModelHealth:
    """What the supervisor knows about one model (mutated by its watch task only)."""

    state: State = "serving"
    reason: str = ""
    attempts: int = 0  # restart attempts in the current budget
    healthy_since: float = 0.0


def describe(exc: BaseException) -> str:
    """A one-line reason (QuantserveError messages are client-safe; others get their type)."""
    text = exc.message if isinstance(exc, QuantserveError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:300]


class Supervisor:
    """Watches the models it is told are loaded (``watch``), never the ones that are not: a
    model unloaded on purpose is not a dead engine."""

    def __init__(self, backends: Mapping[str, Backend], policy: RestartPolicy) -> None:
        self._backends = backends
        self._policy = policy
        now = time.monotonic()
        self._health = {model_id: ModelHealth(healthy_since=now) for model_id in backends}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, model_ids: Iterable[str] | None = None) -> None:
        """Start watching these models (default: all; call from the event loop that serves the requests)."""
        for model_id in self._backends if model_ids is None else model_ids:
            self.watch(model_id)

    def watch(self, model_id: str) -> None:
        """Watch a model that has just been loaded, with a fresh restart budget."""
        if model_id not in self._tasks:
            self._health[model_id] = ModelHealth(healthy_since=time.monotonic())
            backend = self._backends[model_id]
            self._tasks[model_id] = asyncio.create_task(self._watch(model_id, backend), name=f"supervise-{model_id}")

    async def unwatch(self, model_id: str) -> None:
        """Stop watching a model about to be unloaded (a restart under way is abandoned)."""
        task = self._tasks.pop(model_id, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._health[model_id] = ModelHealth(healthy_since=time.monotonic())

    async def stop(self) -> None:
        for model_id in list(self._tasks):
            await self.unwatch(model_id)

    def unavailable(self, model_id: str) -> str | None:
        """Why the model cannot serve now (restarting or given up), or None."""
        health = self._health.get(model_id)
        if health is None or health.state == "serving":
            return None
        return health.reason

    async def _watch(self, model_id: str, backend: Backend) -> None:
        health = self._health[model_id]
        while health.state != "failed":
            await asyncio.sleep(self._policy.interval_s)
            try:
                await backend.check_health()
            except Exception as exc:
                await self._recover(model_id, backend, health, describe(exc))

    async def _recover(self, model_id: str, backend: Backend, health: ModelHealth, crash: str) -> None:
        policy = self._policy
        if time.monotonic() - health.healthy_since >= policy.reset_after_s:
            health.attempts = 0
        log.error("model %s: engine failed (%s)", model_id, crash)
        last = crash
        while health.attempts < policy.max_restarts:
            health.attempts += 1
            health.state = "restarting"
            health.reason = (
                f"the engine failed ({crash}); restart attempt {health.attempts} of {policy.max_restarts} under way"
            )
            await asyncio.sleep(policy.backoff(health.attempts))
            try:
                await backend.stop()
                await backend.start()
                await backend.check_health()
            except Exception as exc:
                last = describe(exc)
                log.error("model %s: restart attempt %d failed: %s", model_id, health.attempts, last)
                continue
            health.state, health.reason = "serving", ""
            health.healthy_since = time.monotonic()
            log.warning("model %s: engine restarted (attempt %d)", model_id, health.attempts)
            return
        health.state = "failed"
        if health.attempts == 0:
            health.reason = f"the engine failed ({crash}); restarts are off (max_restarts: 0)"
        else:
            health.reason = (
                f"the engine failed ({crash}) and was not restarted after {health.attempts} attempts "
                f"(last error: {last}); restart the server to retry"
            )
        log.error("model %s marked unavailable: %s", model_id, health.reason)
        try:
            await backend.stop()  # free whatever the dead engine still holds
        except Exception:
            log.exception("stopping the failed model %s", model_id)
