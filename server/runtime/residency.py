"""Which models are in memory: each model's residency state, and the rule that makes room.

A served model is ``available`` (known, not loaded), ``loading`` or ``loaded``; each request
holds its model through a ``Lease`` until its response is sent. Room for a load is
made by unloading the least recently used *idle* loaded models (no request in flight) while the
new one would exceed ``max_loaded_models`` or the memory budget; a busy model is never unloaded,
so when only busy models stand in the way the load is refused, naming the numbers.

The memory a model takes is the planner's estimate (``Backend.memory_plan``: weights + KV cache);
the budget is ``memory_budget_gib`` when set, else the host memory available right now (the
planner's reading of ``/proc/meminfo``). A model offloaded to a device has no host-memory plan,
so only an explicit budget and ``max_loaded_models`` bound it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from backends.base import Backend
from backends.errors import BackendUnavailable
from backends.memplan import GiB, available_memory, gib

State = Literal["available", "loading", "loaded"]
T = TypeVar("T")


class NoRoomToLoad(BackendUnavailable):
    """A model cannot be loaded because the models in the way are all busy (503, with the numbers)."""


@dataclass(slots=True)
class Resident:
    """One served model's residency (mutated by the pool only, on the event loop)."""

    backend: Backend
    keep_alive: float  # seconds idle before unloading; math.inf: never
    state: State = "available"
    in_use: int = 0  # requests holding it (a lease each)
    last_used: float = field(default_factory=time.monotonic)
    loaded: asyncio.Event = field(default_factory=asyncio.Event)  # set whenever a load attempt ends
    load_error: str | None = None  # why the last on-demand load failed
    no_room: bool = False  # ... because busy models stood in the way (NoRoomToLoad)
    planned_bytes: int | None = None  # the planner's estimate, read once
    # Counters the metrics read.
    loads: int = 0
    load_seconds: float = 0.0
    last_load_s: float | None = None
    evictions: int = 0
    unloads: dict[str, int] = field(default_factory=dict)
    load_waits: int = 0
    waiting: int = 0

    @property
    def model_id(self) -> str:
        return self.backend.spec.id

    async def plan(self) -> int:
        """Read the planner's estimate once, in a thread (it parses the model's header, which
        can take seconds on a busy machine, and the event loop keeps serving meanwhile)."""
        if self.planned_bytes is None:
            plan = await asyncio.to_thread(self.backend.memory_plan)
            self.planned_bytes = plan.total_bytes if plan is not None else 0
        return self.planned_bytes

    def memory(self) -> int:
        """The planner's estimate in bytes (0 when the engine cannot say or ``plan`` has not run)."""
        return self.planned_bytes or 0

    def idle_s(self, now: float) -> float | None:
        return None if self.in_use else now - self.last_used

    def expires_in(self, now: float) -> float | None:
        """Seconds until the idle unload; None while in use, not loaded, or kept forever."""
        if self.state != "loaded" or self.in_use or math.isinf(self.keep_alive):
            return None
        return max(0.0, self.last_used + self.keep_alive - now)


class Lease:
    """A request's hold on a loaded model; ``release`` (idempotent) lets it go idle again."""

    def __init__(
        self, resident: Resident, keep_alive: float | None, on_release: Callable[[Resident, float | None], None]
    ) -> None:
        self._resident = resident
        self._keep_alive = keep_alive
        self._on_release = on_release
        self._released = False
        self.backend = resident.backend

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._on_release(self._resident, self._keep_alive)

    async def hold(self, items: AsyncIterator[T]) -> AsyncIterator[T]:
        """Pass ``items`` through, releasing the lease when they end (or the consumer leaves);
        closing the wrapper closes ``items`` first, so their own clean-up runs now."""
        try:
            async for item in items:
                yield item
        finally:
            try:
                aclose = getattr(items, "aclose", None)
                if aclose is not None:
                    await aclose()
            finally:
                self.release()


@dataclass(frozen=True, slots=True)
class RoomRule:
    max_loaded: int | None = None
    budget_bytes: int | None = None  # None: the host's available memory at load time

    def victims(self, wanted: Resident, residents: Iterable[Resident]) -> list[Resident]:
        """The idle models to unload, least recently used first, so that ``wanted`` fits.
        Raises ``NoRoomToLoad`` when unloading every idle model would not be enough."""
        loaded = [r for r in residents if r is not wanted and r.state == "loaded"]
        idle = sorted((r for r in loaded if r.in_use == 0), key=lambda r: r.last_used)
        need = wanted.memory()
        held = sum(r.memory() for r in loaded)
        free = None if self.budget_bytes is not None else available_memory()
        chosen: list[Resident] = []
        while not self._fits(len(loaded) - len(chosen), held, need, free):
            if len(chosen) == len(idle):
                raise self._refusal(wanted, loaded, chosen, held, free)
            victim = idle[len(chosen)]
            chosen.append(victim)
            held -= victim.memory()
            if free is not None:
                free += victim.memory()
        return chosen

    def _fits(self, count: int, held: int, need: int, free: int | None) -> bool:
        if self.max_loaded is not None and count + 1 > self.max_loaded:
            return False
        if self.budget_bytes is not None:
            return held + need <= self.budget_bytes
        return free is None or need <= free

    def _refusal(
        self, wanted: Resident, loaded: list[Resident], idle: list[Resident], held: int, free: int | None
    ) -> NoRoomToLoad:
        busy = [r for r in loaded if r not in idle]
        names = ", ".join(f"{r.model_id} ({gib(r.memory())}, {r.in_use} request(s))" for r in busy) or "none"
        need = wanted.memory()
        if self.max_loaded is not None and len(busy) + 1 > self.max_loaded:
            limit = f"max_loaded_models is {self.max_loaded} and {len(busy)} loaded model(s) are busy: {names}"
        elif self.budget_bytes is not None:
            limit = f"the memory budget is {gib(self.budget_bytes)}, of which busy models hold {gib(held)}: {names}"
        elif not busy:
            # Nothing else holds memory: this model can never fit here, and waiting will not help.
            return NoRoomToLoad(
                f"model '{wanted.model_id}' cannot fit in this machine's memory: it needs {gib(need)} "
                f"(weights + KV cache) and {gib(free or 0)} is available. Lower n_ctx / parallel, use a "
                "smaller KV cache type (q8_0 / q4_0) or a smaller quantization."
            )
        else:
            limit = f"{gib(free or 0)} of host memory is available; busy models: {names}"
        return NoRoomToLoad(
            f"Cannot load the model '{wanted.model_id}' now: it needs {gib(need)} (weights + KV cache), and "
            f"{limit}. Nothing idle can be unloaded; retry when their requests finish."
        )


def budget_bytes(gib_setting: float | None) -> int | None:
    return None if gib_setting is None else int(gib_setting * GiB)
