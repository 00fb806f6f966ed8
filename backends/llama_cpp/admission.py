"""Admission control: the bounded FIFO between the event loop and the engine thread."""

from __future__ import annotations

import math
import threading
from collections import deque

from backends.errors import BackendUnavailable, Overloaded
from backends.llama_cpp.slots import RequestHandle


class RequestGate:
    """Counts requests against ``slots + max_queue`` and passes new ones to the engine thread.

    A request counts from ``submit`` until ``release``, which both sides may call (the engine when
    it finishes the request, the event loop when the client goes away); only the first counts.
    """

    def __init__(self, *, slots: int, max_queue: int) -> None:
        self._slots = slots
        self._capacity = slots + max_queue
        self._lock = threading.Lock()  # guards everything below except `wake`
        self._inbox: deque[RequestHandle] = deque()
        self._outstanding = 0
        self._closed = False
        self._service_s = 1.0  # moving average of a request's time in a slot, for Retry-After
        self.wake = threading.Event()  # set whenever the engine thread has something new to look at

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def outstanding(self) -> int:
        """Requests running or waiting."""
        with self._lock:
            return self._outstanding

    def submit(self, req: RequestHandle) -> None:
        with self._lock:
            if self._closed:
                raise BackendUnavailable("the llama.cpp engine is not running")
            if self._outstanding >= self._capacity:
                waiting = self._outstanding - self._slots
                # Roughly when a queue place frees up: the queue ahead drains `slots` at a time.
                retry = self._service_s * math.ceil((waiting + 1) / self._slots)
                raise Overloaded(
                    f"all {self._slots} slots are busy and {waiting} requests are queued",
                    retry_after=float(min(60, max(1, math.ceil(retry)))),
                )
            self._outstanding += 1
            self._inbox.append(req)
        self.wake.set()

    def release(self, req: RequestHandle) -> None:
        with self._lock:
            if req.counted:
                req.counted = False
                self._outstanding -= 1

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
