"""A protocol-conforming fake engine for what a real one cannot do on demand: die mid-stream,
refuse to start again, and keep a fixed pace whatever the machine's load.

It streams words `` w0 w1 ...``, one every ``step_s``. ``crash_after`` makes the next stream kill the
engine after that many tokens (the stream then fails, as every request on a dead engine does);
``failing_starts`` makes that many ``start()`` calls fail; ``start_gate``, when set, holds
``start()`` until the test opens it, so the test sees the model while it restarts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar

from backends.base import Backend, BackendOptions
from backends.errors import BackendStartupError, BackendUnavailable
from backends.types import (
    BackendInfo,
    Device,
    EngineStats,
    GenerationChunk,
    GenerationRequest,
    ModelFormat,
    ModelSpec,
    Support,
    Usage,
)


class CrashingBackend(Backend):
    name: ClassVar[str] = "fake"
    Options: ClassVar[type[BackendOptions]] = BackendOptions

    def __init__(self, model_id: str, *, step_s: float = 0.01) -> None:
        super().__init__(ModelSpec(model_id, Path("fake.bin"), ModelFormat.GGUF, "fake"), BackendOptions())
        self.step_s = step_s
        self.loaded = False
        self.failure: str | None = None
        self.crash_after: int | None = None
        self.failing_starts = 0
        self.starts = 0
        self.start_gate: asyncio.Event | None = None
        self.running = 0

    @classmethod
    def supports(cls, spec: ModelSpec, device: Device) -> Support:
        return Support.yes()

    async def start(self) -> None:
        self.starts += 1
        if self.start_gate is not None:
            await self.start_gate.wait()
        if self.failing_starts > 0:
            self.failing_starts -= 1
            raise BackendStartupError(f"model {self.spec.id!r}: the fake engine refused to start")
        self.loaded, self.failure = True, None

    async def stop(self) -> None:
        self.loaded = False

    async def check_health(self) -> None:
        if not self.loaded:
            raise BackendUnavailable(f"model {self.spec.id!r} is not loaded")
        if self.failure is not None:
            raise BackendUnavailable(f"model {self.spec.id!r}: the fake engine stopped ({self.failure})")

    def info(self) -> BackendInfo:
        return BackendInfo(self.name, self.spec.id, "cpu", "fake", "none", "none", 1024)

    def stats(self) -> EngineStats:
        return EngineStats(running=self.running)

    async def generate(self, req: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        if not self.loaded or self.failure is not None:
            raise BackendUnavailable("the fake engine is not running")
        limit = req.sampling.max_tokens or 16
        crash_at, self.crash_after = self.crash_after, None
        self.running += 1
        try:
            for i in range(limit):
                await asyncio.sleep(self.step_s)
                if crash_at is not None and i >= crash_at:
                    self.failure = "RuntimeError: injected engine crash"
                if self.failure is not None:
                    raise BackendUnavailable("the fake engine failed")
                yield GenerationChunk(f" w{i}", 1)
            yield GenerationChunk(finish_reason="length", usage=Usage(1, limit))
        finally:
            self.running -= 1
