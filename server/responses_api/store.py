"""Stored responses, so ``previous_response_id`` continues a conversation server-side.

In memory, one store per app (``app.state.responses``), bounded twice: at most ``max_entries``
responses and ``max_bytes`` of them (their JSON plus the conversation they continue); past either
bound the least recently used go first. Nothing survives a restart; an evicted, deleted or never
stored id is a 404.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from backends.types import Message
from server.http.errors import NotFound

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoredResponse:
    body: dict[str, Any]  # the response object, as GET returns it
    conversation: tuple[Message, ...]  # every turn up to and including this response's output
    size: int

    @classmethod
    def of(cls, body: dict[str, Any], conversation: tuple[Message, ...]) -> StoredResponse:
        text = sum(
            len(m.content) + len(m.reasoning or "") + sum(len(c.arguments) for c in m.tool_calls) for m in conversation
        )
        return cls(body, conversation, len(json.dumps(body, ensure_ascii=False)) + text)


class ResponseStore:
    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, StoredResponse] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, response_id: str, item: StoredResponse) -> None:
        if item.size > self.max_bytes or self.max_entries == 0:
            log.warning("response %s (%d bytes) is larger than the whole store; not stored", response_id, item.size)
            return
        self.delete(response_id, missing_ok=True)
        self._items[response_id] = item
        self.bytes += item.size
        while len(self._items) > self.max_entries or self.bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.bytes -= old.size

    def get(self, response_id: str) -> StoredResponse:
        item = self._items.get(response_id)
        if item is None:
            raise NotFound(_missing(response_id), param="response_id")
        self._items.move_to_end(response_id)
        return item

    def delete(self, response_id: str, *, missing_ok: bool = False) -> None:
        item = self._items.pop(response_id, None)
        if item is None:
            if not missing_ok:
                raise NotFound(_missing(response_id), param="response_id")
            return
        self.bytes -= item.size


def _missing(response_id: str) -> str:
    return (
        f"Response with id '{response_id}' not found. It was never stored (store: false), was deleted, "
        "or was evicted from this server's bounded in-memory store."
    )
