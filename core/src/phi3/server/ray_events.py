"""What a model replica sends its ingress, and what every replica tells the registry.

The two halves of ``phi3 serve --ray`` run in different processes (often on different nodes), so
everything crossing between them is plain, picklable data defined here, in one place: a
generation is a stream of :data:`Event` tuples, and a replica's state is a :class:`Snapshot`.
Errors travel as their OpenAI body plus status and headers (an :class:`~phi3.server.errors.APIError`
itself does not survive pickling: its constructor needs the status).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from phi3.server.errors import APIError

Event = tuple[str, Any]
"""``("started", replica)``, ``("piece", text)``, ``("done", GenerationResult)``, ``("error", ErrorData)``."""


@dataclass(frozen=True)
class ErrorData:
    """An :class:`APIError` as data, and the replica that answered it."""

    status: int
    message: str
    type: str
    param: str | None
    code: str | None
    headers: dict[str, str]
    replica: str

    @classmethod
    def of(cls, error: APIError, replica: str) -> ErrorData:
        return cls(error.status, error.message, error.type, error.param, error.code, dict(error.headers), replica)

    def error(self) -> APIError:
        return APIError(
            self.status, self.message, type=self.type, param=self.param, code=self.code, headers=dict(self.headers)
        )


@dataclass(frozen=True)
class Snapshot:
    """One replica's state, as it last reported it to the registry.

    ``cards`` are the replica's loaded models (``ModelCard`` dumps), ``metrics`` its Prometheus
    metric families (``registry.collect()``), which ``/metrics`` merges with a ``replica`` label.
    """

    replica: str
    model: str
    node: str
    host: str
    pid: int
    cards: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[Any] = field(default_factory=list)
