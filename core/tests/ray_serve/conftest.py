"""Fixtures for ``phi3 serve --ray``: a two-node Ray cluster on 127.0.0.1 and the Ray process check.

The cluster is Ray's own test cluster (:class:`ray.cluster_utils.Cluster`): a head node and a
worker node, one CPU each, both started by this test process, so every Ray process of the cluster
descends from it. The worker node also advertises a custom ``npu`` resource, as a real NPU laptop
started with ``ray start --resources '{"npu": 1}'`` would.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

pytest.importorskip("ray", reason="the Ray tests need phi3-core[ray] (nox -s ray)")
pytest.importorskip("openai", reason="the Ray tests use the official openai client (nox -s ray)")
psutil = pytest.importorskip("psutil", reason="the Ray tests check for leftover processes with psutil")

STOP_TIMEOUT_S = 60.0

# Ray 2.60 rewrites a loopback cluster address to this machine's outward IP before connecting
# (ray._private.services.resolve_ip_for_localhost), which a cluster bound to 127.0.0.1 does not
# listen on; with Ray's "no clusters on this OS" switch off, its own node IP is the loopback one.
# Set before the cluster starts, so the nodes, their workers and every `phi3 serve` inherit it.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


@dataclass
class TwoNodes:
    address: str
    head_node_id: str
    worker_node_id: str


def descendants() -> dict[int, str]:
    """Every process below this one (pid -> name), e.g. the cluster's gcs_server, raylets, workers."""
    found: dict[int, str] = {}
    for child in psutil.Process(os.getpid()).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            found[child.pid] = child.name()
    return found


def wait_gone(processes: dict[int, str], timeout: float = STOP_TIMEOUT_S) -> dict[int, str]:
    """Those of ``processes`` still running (not zombies) after at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    alive = dict(processes)
    for _ in range(int(timeout / 0.2) + 1):
        for pid in list(alive):
            try:
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    del alive[pid]
            except psutil.NoSuchProcess:
                del alive[pid]
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return alive


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[TwoNodes]:
    """The cluster; at the end it is shut down and none of its processes may be left running."""
    from ray.cluster_utils import Cluster

    before = set(descendants())
    common = {"node_ip_address": "127.0.0.1", "object_store_memory": 80 * 1024 * 1024}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={**common, "num_cpus": 1, "include_dashboard": False},
        shutdown_at_exit=True,
    )
    worker = cluster.add_node(**common, num_cpus=1, resources={"npu": 1})
    cluster.wait_for_nodes()
    try:
        yield TwoNodes(cluster.address, cluster.head_node.node_id, worker.node_id)
    finally:
        started = {pid: name for pid, name in descendants().items() if pid not in before}
        cluster.shutdown()
        left = wait_gone(started)
        assert not left, f"Ray processes still running after the cluster shut down: {left}"
