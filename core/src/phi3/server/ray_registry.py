"""The registry of ``phi3 serve --ray``: the last snapshot of every live model replica.

A Ray Serve handle reaches one replica of a deployment, never all of them, so ``/v1/models`` and
``/metrics`` cannot ask each replica directly. Instead every model replica reports its
:class:`~phi3.server.ray_events.Snapshot` here every second (and soon after each request), and
the ingress reads them all. The registry is a Ray Serve deployment of the same application (one
replica, no CPU), so Serve places, restarts and shuts it down with the rest; a restarted registry
is complete again within a report period. A replica that stopped reporting (its process died) is
dropped after :data:`STALE_AFTER_S`.
"""

from __future__ import annotations

import time

from phi3.server.ray_events import Snapshot

STALE_AFTER_S = 5.0


class Registry:
    """The Ray Serve deployment class of the registry (see the module docstring)."""

    def __init__(self) -> None:
        self._snapshots: dict[str, tuple[float, Snapshot]] = {}

    def report(self, snapshot: Snapshot) -> None:
        self._snapshots[snapshot.replica] = (time.monotonic(), snapshot)

    def forget(self, replica: str) -> None:
        """A replica shutting down cleanly leaves at once (a crashed one goes stale)."""
        self._snapshots.pop(replica, None)

    def snapshots(self) -> list[Snapshot]:
        """The live replicas' snapshots, in the order they first reported."""
        cutoff = time.monotonic() - STALE_AFTER_S
        for replica, (seen, _) in list(self._snapshots.items()):
            if seen < cutoff:
                del self._snapshots[replica]
        return [snapshot for _, snapshot in self._snapshots.values()]
