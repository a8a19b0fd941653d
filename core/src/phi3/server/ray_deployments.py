"""The Ray Serve application of ``phi3 serve --ray``: which deployments, placed and scaled how.

One application, three kinds of deployment:

- ``phi3-ingress``: the FastAPI app (:func:`phi3.server.app.create_app`) behind ``serve.ingress``,
  with a :class:`~phi3.server.ray_ingress.RayServer`; no CPU reserved (it only relays).
- one ``phi3-model-...`` deployment per served MODEL (:class:`~phi3.server.ray_replica.ModelReplica`):
  ``--replicas N`` or ``--autoscale MIN:MAX`` replicas, each reserving ``--replica-cpus`` CPUs and
  the Ray resources of ``--ray-resource`` (``-d NPU`` adds ``npu=1`` itself), so Ray places an NPU
  model only on nodes started with ``ray start --resources '{"npu": 1}'``. With ``--adapter``, the
  MODEL's replicas each load it with every adapter: the ``(name, path)`` strings travel in the
  deployment's settings (never loaded objects), and each replica converts them through PHI3_HOME's
  cache, whose per-key file lock makes replicas racing on one node convert once.
- ``phi3-registry``: every replica's last report, for ``/v1/models`` and ``/metrics``.

A replica accepts at most ``--max-queue`` waiting requests plus :data:`SLOT_ALLOWANCE` running
ones from Ray's router, so the 429 a client sees is the replica's own slot queue, exactly as under
uvicorn; the router's queue in front of all replicas is bounded by ``--max-queue`` too.

:func:`build_app` is also a Ray Serve application builder, for clusters deployed from a config
file (``serve run``, KubeRay's RayService): ``import_path: phi3.server.ray_deployments:build_app``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from phi3.errors import ConfigError
from phi3.server.adapters import parse_adapter_flags
from phi3.server.app import create_app
from phi3.server.model_spec import Defaults
from phi3.server.ray_ingress import RayServer, ReplicaHeader
from phi3.server.ray_options import RayOptions, parse_autoscale
from phi3.server.ray_registry import Registry
from phi3.server.ray_replica import ModelReplica
from phi3.server.serving import ServerSettings

SLOT_ALLOWANCE = 64
"""Running generations a replica may hold beyond its queue (more than any backend's batch)."""
INGRESS_MAX_ONGOING = 1024
"""Requests the ingress relays at once (it only awaits replicas; Serve's default is 5)."""


@serve.ingress()
class Ingress:
    """The ``phi3-ingress`` deployment: the app built on the replica, with handles to the models."""

    def __init__(
        self, settings: ServerSettings, models: Mapping[str, DeploymentHandle[Any]], registry: DeploymentHandle[Any]
    ) -> None:
        app = create_app(settings, server=RayServer(settings, models, registry))
        app.add_middleware(ReplicaHeader)
        self._app = app

    def __serve_build_asgi_app__(self) -> FastAPI:
        return self._app


def deployment_name(index: int, model: str) -> str:
    """A Ray deployment name for a MODEL (which may be a path): ``phi3-model-0-smoke``."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-")[-40:] or "model"
    return f"phi3-model-{index}-{slug}"


def application(settings: ServerSettings, options: RayOptions) -> Application:
    """The bound application serving ``settings.models``."""
    if not settings.models:
        raise ConfigError(
            "phi3 serve --ray needs the MODELs to serve (one Ray deployment each)", hint="e.g. phi3 serve --ray smoke"
        )
    registry = serve.deployment(
        name="phi3-registry",
        num_replicas=1,
        ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=1024,
        logging_config={"enable_access_log": False},  # a report per replica per second
    )(Registry).bind()
    scaling: dict[str, Any] = {"num_replicas": options.replicas}
    if options.autoscale is not None:
        low, high = options.autoscale
        scaling = {
            "autoscaling_config": {
                "min_replicas": low,
                "max_replicas": high,
                "initial_replicas": max(low, 1),
                "target_ongoing_requests": options.target_ongoing,
            },
        }
    actor_options: dict[str, Any] = {"num_cpus": options.replica_cpus}
    resources = options.resources_for(settings.defaults)
    if resources:
        actor_options["resources"] = resources
    models = {
        name: serve.deployment(
            name=deployment_name(index, name),
            ray_actor_options=actor_options,
            max_ongoing_requests=settings.max_queue + SLOT_ALLOWANCE,
            max_queued_requests=max(settings.max_queue, 1),
            **scaling,
        )(ModelReplica).bind(name, settings, registry)
        for index, name in enumerate(dict.fromkeys(settings.models))
    }
    ingress = serve.deployment(
        name="phi3-ingress",
        num_replicas=1,
        ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=INGRESS_MAX_ONGOING,
    )(Ingress)
    return ingress.bind(settings, models, registry)


def build_app(args: dict[str, Any]) -> Application:
    """Ray Serve application builder (``serve run``, RayService): ``args`` are phi3 serve's options.

    Keys: ``models`` (a list or comma-separated), ``backend``, ``device``, ``precision``, ``engine``,
    ``api_key``, ``max_loaded``, ``idle_unload``, ``max_queue``, ``replicas``, ``autoscale``
    (``"MIN:MAX"``), ``replica_cpus``, ``resources`` (a mapping), ``adapters`` (a mapping NAME: PATH,
    or ``--adapter`` values ``"NAME=PATH"``; PATH must exist on every node, or be a hub id).
    """
    known = {
        "models", "backend", "device", "precision", "engine", "api_key", "max_loaded", "idle_unload",
        "max_queue", "replicas", "autoscale", "replica_cpus", "resources", "adapters",
    }  # fmt: skip
    unknown = sorted(set(args) - known)
    if unknown:
        raise ConfigError(f"unknown phi3 application argument(s): {', '.join(unknown)}", hint=f"use {sorted(known)}")
    models = args.get("models", [])
    if isinstance(models, str):
        models = [part.strip() for part in models.split(",") if part.strip()]
    adapters = parse_adapter_flags(_adapter_values(args.get("adapters")), models)
    defaults = Defaults(
        backend=str(args.get("backend", "auto")),
        device=str(args.get("device", "auto")),
        precision=args.get("precision"),
        engine=args.get("engine"),
        adapters=adapters,
        adapter_base=models[0] if adapters else None,
    )
    settings = ServerSettings(
        models=tuple(models),
        defaults=defaults,
        api_key=args.get("api_key") or None,
        max_loaded=int(args.get("max_loaded", 1)),
        idle_unload=float(args["idle_unload"]) if args.get("idle_unload") else None,
        max_queue=int(args.get("max_queue", 16)),
    )
    options = RayOptions(
        replicas=int(args.get("replicas", 1)),
        autoscale=parse_autoscale(str(args["autoscale"])) if args.get("autoscale") else None,
        replica_cpus=float(args.get("replica_cpus", 1.0)),
        resources=tuple((str(k), float(v)) for k, v in dict(args.get("resources") or {}).items()),
    )
    return application(settings, options)


def _adapter_values(value: Any) -> list[str]:
    """The builder's ``adapters`` argument as ``--adapter`` values (``NAME=PATH``)."""
    if not value:
        return []
    if isinstance(value, Mapping):
        return [f"{name}={path}" for name, path in value.items()]
    if isinstance(value, str):  # one value: a path may hold a comma
        return [value]
    return [str(item) for item in value]
