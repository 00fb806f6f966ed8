"""Admission control: the bounded FIFO between the event loop and the engine thread."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Iterable

from backends.errors import BackendUnavailable, Overloaded, QueueTimeout
from backends.llama_cpp.slots import RequestHandle


class RequestGate:
    """Counts requests against ``slots + max_queue`` and passes new ones to the engine thread.

    A request counts from ``submit`` until ``release``, which both sides may call (the engine when
    it finishes the request, the event loop when the client goes away); only the first counts.

    A request submitted with a queue timeout that is still waiting for a slot past it is failed
    with ``QueueTimeout`` (``expire``, called by the engine thread after every step); once it has
    a slot, the queue timeout no longer applies.
    """

    def __init__(self, *, slots: int, max_queue: int) -> None:
        self._slots = slots
        self._capacity = slots + max_queue
        self._lock = threading.Lock()  # guards everything below except `wake`
        self._inbox: deque[RequestHandle] = deque()
        self._outstanding = 0
        self._closed = False
        self._service_s = 1.0  # moving average of a request's time in a slot, for Retry-After
        self._deadlines: dict[RequestHandle, tuple[float, float]] = {}  # req -> (deadline, timeout)
        self.wake = threading.Event()  # set whenever the engine thread has something new to look at

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def outstanding(self) -> int:
        """Requests running or waiting."""
        with self._lock:
            return self._outstanding

    def submit(self, req: RequestHandle, *, queue_timeout_s: float | None = None) -> None:
        with self._lock:
            if self._closed:
                raise BackendUnavailable("the llama.cpp engine is not running")
            if self._outstanding >= self._capacity:
                waiting = self._outstanding - self._slots
                raise Overloaded(
                    f"all {self._slots} slots are busy and {waiting} requests are queued",
                    retry_after=self._retry_after(waiting),
                )
            self._outstanding += 1
            self._inbox.append(req)
            if queue_timeout_s is not None:
                self._deadlines[req] = (req.submitted + queue_timeout_s, queue_timeout_s)
        self.wake.set()

    def _retry_after(self, waiting: int) -> float:
        # Roughly when a queue place frees up: the queue ahead drains `slots` at a time.
        retry = self._service_s * math.ceil((waiting + 1) / self._slots)
        return float(min(60, max(1, math.ceil(retry))))

    def release(self, req: RequestHandle) -> None:
        with self._lock:
            self._deadlines.pop(req, None)
            if req.counted:
                req.counted = False
                self._outstanding -= 1

    def expire(self, waiting: Iterable[RequestHandle]) -> list[tuple[RequestHandle, QueueTimeout]]:
        """Engine thread: the waiting requests past their queue deadline, each with its error.

        They are released here and marked cancelled, so the scheduler drops them from its queue
        on its next step exactly as it drops a request whose client went away.
        """
        now = time.monotonic()
        out: list[tuple[RequestHandle, QueueTimeout]] = []
        with self._lock:
            if not self._deadlines:
                return out
            for req in waiting:
                deadline, timeout = self._deadlines.get(req, (math.inf, 0.0))
                if now >= deadline and not req.cancelled:
                    ahead = max(0, self._outstanding - self._slots - 1)
                    error = QueueTimeout(
                        f"The request waited {timeout:g} s (its queue_timeout_s) without getting one of the "
                        f"model's {self._slots} slots and was not started; {ahead} other requests are queued. "
                        "Retry later.",
                        retry_after=self._retry_after(ahead),
                    )
                    out.append((req, error))
        for req, _ in out:
            req.cancelled = True
            self.release(req)
        return out

    def note_service_time(self, seconds: float) -> None:
        with self._lock:
            self._service_s = 0.8 * self._service_s + 0.2 * seconds

    def take_new(self) -> list[RequestHandle]:
        """Engine thread: the requests submitted since the last call, in arrival order."""
        with self._lock:
            new = list(self._inbox)
            self._inbox.clear()
        return new

    def close(self) -> None:
        """Refuse new requests from now on and wake the engine thread so it can stop."""
        with self._lock:
            self._closed = True
        self.wake.set()
