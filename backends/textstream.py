"""Turn a stream of token bytes into safe text deltas.

Two problems every engine shares: a token can end in the middle of a UTF-8 character, and a
stop string can span several tokens. ``TextStream`` holds back exactly the bytes/characters
that could still turn out to be part of either, and releases the rest.
"""

from __future__ import annotations

import codecs


class TextStream:
    """Incremental UTF-8 decoding plus stop-string matching across token boundaries."""

    def __init__(self, stop: tuple[str, ...] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = tuple(s for s in stop if s)
        self._hold = max((len(s) for s in self._stop), default=1) - 1
        self._pending = ""
        self.stopped = False

    def feed(self, data: bytes) -> str:
        """Add one token's bytes; return the text that is now safe to send."""
        if self.stopped:
            return ""
        self._pending += self._decoder.decode(data)
        if not self._stop:
            out, self._pending = self._pending, ""
            return out
        cut = self._first_stop(self._pending)
        if cut is not None:
            self.stopped = True
            out = self._pending[:cut]
            self._pending = ""
            return out
        # Keep the longest tail that is a prefix of some stop string; send the rest.
        keep = self._partial_tail(self._pending)
        out = self._pending[: len(self._pending) - keep]
        self._pending = self._pending[len(self._pending) - keep :]
        return out

    def flush(self) -> str:
        """End of generation: release everything still held (an incomplete character as U+FFFD)."""
        if self.stopped:
            return ""
        self._pending += self._decoder.decode(b"", final=True)
        cut = self._first_stop(self._pending)
        if cut is not None:
            self.stopped = True
            self._pending = self._pending[:cut]
        out, self._pending = self._pending, ""
        return out

    def _first_stop(self, text: str) -> int | None:
        hits = [i for i in (text.find(s) for s in self._stop) if i >= 0]
        return min(hits) if hits else None

    def _partial_tail(self, text: str) -> int:
        for size in range(min(self._hold, len(text)), 0, -1):
            tail = text[-size:]
            if any(s.startswith(tail) for s in self._stop):
                return size
        return 0


def partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that is a proper beginning of ``tag``: what a
    streaming parser must hold back until it knows whether the tag follows."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0
