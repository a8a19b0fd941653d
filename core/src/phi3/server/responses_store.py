"""Responses kept for ``previous_response_id``: a bounded in-memory LRU, and one per WebSocket connection.

A stored response is the response object as it was returned and the conversation it ends (phi3 chat
messages, without its ``instructions``, which OpenAI does not carry over), so the next turn
continues it without the client sending it again. Nothing is written to disk: a server restart
forgets every response. The server's store holds at most :data:`MAX_STORED_RESPONSES` responses and
:data:`MAX_STORED_BYTES` of them (JSON size); beyond either, the least recently used (created,
retrieved or continued) goes. A WebSocket connection keeps its own :data:`CONNECTION_RESPONSES`
most recent responses (``store: false`` ones too, as OpenAI's WebSocket mode does), dropped with
the connection. An id that is not there, never stored or evicted, is the spec's
``previous_response_not_found`` error.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_STORED_RESPONSES = 1024
MAX_STORED_BYTES = 64 * 1024 * 1024
CONNECTION_RESPONSES = 16


@dataclass(frozen=True)
class StoredResponse:
    """One response: the object returned, and the conversation through its output."""

    response: Mapping[str, Any]
    history: tuple[Mapping[str, Any], ...]
    size: int

    @classmethod
    def of(cls, response: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> StoredResponse:
        size = len(json.dumps(response, ensure_ascii=False)) + len(json.dumps(list(history), ensure_ascii=False))
        return cls(response, tuple(history), size)

    @property
    def id(self) -> str:
        return str(self.response["id"])


class ResponseStore:
    """A least-recently-used map of response id to :class:`StoredResponse`, bounded in count and bytes.

    Used from the event loop only (no locking needed)."""

    def __init__(self, max_entries: int = MAX_STORED_RESPONSES, max_bytes: int = MAX_STORED_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, StoredResponse] = OrderedDict()
        self._bytes = 0

    def put(self, stored: StoredResponse) -> bool:
        """Keep ``stored``, evicting the least recently used beyond the bounds; False when it alone is
        over the byte bound (then it is not kept)."""
        if stored.size > self.max_bytes or self.max_entries < 1:
            return False
        self.delete(stored.id)
        self._entries[stored.id] = stored
        self._bytes += stored.size
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.size
        return True

    def get(self, response_id: str) -> StoredResponse | None:
        stored = self._entries.get(response_id)
        if stored is not None:
            self._entries.move_to_end(response_id)
        return stored

    def delete(self, response_id: str) -> bool:
        stored = self._entries.pop(response_id, None)
        if stored is None:
            return False
        self._bytes -= stored.size
        return True

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes


__all__ = ["CONNECTION_RESPONSES", "MAX_STORED_BYTES", "MAX_STORED_RESPONSES", "ResponseStore", "StoredResponse"]
