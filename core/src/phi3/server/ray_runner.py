"""``phi3 serve --ray``: deploy the server as a Ray Serve application and run until Ctrl-C.

The uvicorn runner (:mod:`phi3.server.command`) serves :func:`~phi3.server.app.create_app` in
this process; this runner deploys the same app (:mod:`phi3.server.ray_deployments`) on a Ray
cluster: the one at ``--ray-address`` (or ``RAY_ADDRESS``), else a local one started here, which
is stopped again on exit. Ray Serve's HTTP proxy listens on ``--host``/``--port`` of the head node.

Deploying waits until every model replica has loaded its model, bounded by ``start_timeout``: a
replica that fails (an unknown model, a backend missing on its node) or one no node can host (a
``npu`` resource nowhere) is phi3's one-line error and exit 1, never a hang. On SIGINT/SIGTERM the
application is deleted (and Serve shut down when nothing else runs on it), then the driver leaves
the cluster; a local cluster's processes all end with it.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from types import FrameType
from typing import Any

import click

from phi3.errors import BackendError, ConfigError
from phi3.server.app import ServerSettings
from phi3.server.ray_options import RayOptions

APP_NAME = "phi3"
DEPLOY_POLL_S = 0.5
REACH_TIMEOUT_S = 10.0

log = logging.getLogger("phi3.server")


def run(
    settings: ServerSettings,
    options: RayOptions,
    *,
    address: str | None,
    host: str,
    port: int,
    log_level: str,
    start_timeout: float,
) -> None:
    import ray
    from ray import serve

    from phi3.server.ray_deployments import application

    app = application(settings, options)  # a bad option is an error before any cluster starts
    if address:
        _check_reachable(address)
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    own_cluster = address is None and not os.environ.get("RAY_ADDRESS")  # ray.init reads RAY_ADDRESS
    try:
        ray.init(
            # "local": a fresh Ray of our own, never a `ray start` cluster found on this machine
            address=address or (None if os.environ.get("RAY_ADDRESS") else "local"),
            include_dashboard=False if own_cluster else None,
            logging_level=int(getattr(logging, log_level.upper())),
            configure_logging=True,
        )
        try:
            serve.start(http_options={"host": host, "port": port}, proxy_location="HeadOnly")
            _deploy(app, stop, start_timeout)
            if not stop.is_set():
                scale = (
                    f"autoscale {options.autoscale[0]}:{options.autoscale[1]}"
                    if options.autoscale
                    else (f"{options.replicas} replica(s)")
                )
                click.echo(
                    f"phi3 serve ready on http://{host}:{port} (Ray Serve, {scale} per model): "
                    f"{', '.join(settings.models)}",
                    err=True,
                )
            while not stop.wait(1.0):
                pass
        finally:
            _undeploy(own_cluster)
            ray.shutdown()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo("phi3 serve stopped", err=True)


def _deploy(app: Any, stop: threading.Event, timeout: float) -> None:
    """Submit the application, then wait (in this thread, so Ctrl-C and the timeout still work, and
    no Ray call is left running in another thread when we shut down) until it runs or fails."""
    from ray import serve

    serve.run_many(
        [serve.RunTarget(app, name=APP_NAME, route_prefix="/")],
        wait_for_ingress_deployment_creation=False,
        wait_for_applications_running=False,
    )
    deadline = time.monotonic() + timeout
    while not stop.wait(DEPLOY_POLL_S):
        status = serve.status().applications.get(APP_NAME)
        state = str(status.status) if status is not None else ""
        if state.endswith("RUNNING"):
            return
        if state.endswith(("DEPLOY_FAILED", "UNHEALTHY")):
            raise BackendError(
                f"the phi3 application failed to deploy on Ray: {_last_line(_status_text())}",
                hint="the replica logs (ray logs, or this terminal) have the details",
            )
        if time.monotonic() > deadline:
            raise BackendError(
                f"the phi3 application did not start on Ray within {timeout:.0f} s: {_status_line()}",
                hint="check that a node has the CPUs and resources a replica asks for (docs/ray.md), "
                "or raise --ray-start-timeout",
            )


def _undeploy(own_cluster: bool) -> None:
    from ray import serve

    try:
        serve.delete(APP_NAME)
        if own_cluster or not serve.status().applications:
            serve.shutdown()  # type: ignore[no-untyped-call]
    except Exception as exc:  # the cluster went away first: nothing left to remove
        log.warning("could not remove the phi3 application from Ray: %s", exc)


def _status_text() -> str:
    """Every message of the application and its deployments (a failed replica's error is in one)."""
    from ray import serve

    status = serve.status().applications.get(APP_NAME)
    if status is None:
        return "the application was not created"
    messages = [status.message, *(d.message for d in status.deployments.values())]
    return "\n".join(message for message in messages if message)


def _status_line() -> str:
    from ray import serve

    try:
        status = serve.status().applications.get(APP_NAME)
    except Exception as exc:
        return f"(no status: {exc})"
    if status is None:
        return "the application was not created"
    parts = [f"{name}: {d.status} {d.message}".strip() for name, d in status.deployments.items() if d.message]
    return " ".join(" | ".join(parts or [f"{status.status} {status.message}"]).split())[:800]


def _last_line(text: str) -> str:
    """The useful end of Ray's deploy error (a replica's traceback): its final exception line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[-1] if lines else text
    for prefix in ("phi3.server.errors.APIError: ", "RuntimeError: "):
        line = line.removeprefix(prefix)
    return line[:500]


def _check_reachable(address: str) -> None:
    """A wrong ``--ray-address`` is one line at once (``ray.init`` would retry for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=REACH_TIMEOUT_S):
            pass
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot reach a Ray cluster at --ray-address {address} ({exc})",
            hint="give the head node's HOST:PORT (ray start --head prints it), or omit it to start a local Ray",
        ) from None
