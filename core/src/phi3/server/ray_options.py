"""``phi3 serve --ray``'s placement and scaling options, checked without importing Ray.

The click command validates these for every user (Ray is imported only once ``--ray`` runs), and
the Ray application (:mod:`phi3.server.ray_deployments`) turns them into Serve deployment options.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from phi3.errors import ConfigError
from phi3.server.model_spec import Defaults

TARGET_ONGOING = 2.0
"""``--autoscale``: Serve adds replicas when they average more ongoing requests than this."""


@dataclass(frozen=True)
class RayOptions:
    """How ``phi3 serve --ray`` places and scales the model replicas."""

    replicas: int = 1
    autoscale: tuple[int, int] | None = None
    replica_cpus: float = 1.0
    resources: tuple[tuple[str, float], ...] = ()
    target_ongoing: float = TARGET_ONGOING

    def resources_for(self, defaults: Defaults) -> dict[str, float]:
        """The custom resources a replica needs: ``--ray-resource``, else ``npu: 1`` for ``-d NPU``."""
        resources = dict(self.resources)
        if not resources and defaults.device.split(":")[0].upper() == "NPU":
            resources["npu"] = 1.0
        return resources


def parse_autoscale(text: str) -> tuple[int, int]:
    """``MIN:MAX`` (``0:4`` scales to zero when idle); a ConfigError naming the format otherwise."""
    low, sep, high = text.partition(":")
    try:
        if not sep:
            raise ValueError
        bounds = int(low), int(high)
    except ValueError:
        raise ConfigError(f"--autoscale {text!r} is not MIN:MAX", hint="e.g. --autoscale 1:4") from None
    if bounds[0] < 0 or bounds[1] < max(bounds[0], 1):
        raise ConfigError(f"--autoscale {text!r}: need 0 <= MIN <= MAX and MAX >= 1", hint="e.g. --autoscale 1:4")
    return bounds


def parse_resources(pairs: Sequence[str]) -> tuple[tuple[str, float], ...]:
    """``--ray-resource NAME=AMOUNT`` pairs (``npu=1``)."""
    resources: dict[str, float] = {}
    for pair in pairs:
        name, sep, amount = pair.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            value = float(amount)
            if value <= 0:
                raise ValueError
        except ValueError:
            raise ConfigError(
                f"--ray-resource {pair!r} is not NAME=AMOUNT with AMOUNT > 0", hint="e.g. --ray-resource npu=1"
            ) from None
        resources[name.strip()] = value
    return tuple(resources.items())


def options_from_cli(
    use_ray: bool,
    replicas: int | None,
    autoscale: str | None,
    replica_cpus: float | None,
    ray_resources: Sequence[str],
    ray_address: str | None,
) -> RayOptions | None:
    """The Ray options of a ``phi3 serve`` command line; None without ``--ray``.

    Ray options without ``--ray`` are a mistake, not something to ignore.
    """
    given = {
        "--replicas": replicas,
        "--autoscale": autoscale,
        "--replica-cpus": replica_cpus,
        "--ray-resource": ray_resources,
        "--ray-address": ray_address,
    }
    if not use_ray:
        named = [name for name, value in given.items() if value]
        if named:
            raise ConfigError(f"{', '.join(named)} only apply with --ray", hint="add --ray, or drop them")
        return None
    if replicas is not None and autoscale is not None:
        raise ConfigError("--replicas and --autoscale exclude each other", hint="pick a fixed count or a range")
    return RayOptions(
        replicas=replicas or 1,
        autoscale=parse_autoscale(autoscale) if autoscale else None,
        replica_cpus=1.0 if replica_cpus is None else replica_cpus,
        resources=parse_resources(ray_resources),
    )
