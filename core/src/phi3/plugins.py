"""Finding, loading and isolating backend plugins.

Backends are discovered from the ``phi3`` entry-point group. A plugin that fails to import, fails
pluggy's validation, lacks a required hook, targets another contract version or whose probe raises
is kept as a :class:`BackendEntry` with ``status=BROKEN`` and its error, never allowed to break the
CLI or the other backends.

``PHI3_LOAD_PLUGINS=a,b`` loads only those entry points (empty: none);
``PHI3_DISABLE_PLUGINS=a,b`` skips those. Same idea as ``LLM_LOAD_PLUGINS`` / ``pytest -p no:``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import importlib.metadata
import os
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pluggy

from phi3 import hookspecs
from phi3.errors import BackendError, BackendNotFoundError, Phi3Error, PluginError
from phi3.fs_errors import describe_os_error, os_errno_of
from phi3.types import BackendInfo, BackendStatus

ENTRY_POINT_GROUP = "phi3"
USER_FIXABLE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM})
"""OSErrors from a backend that name the user's fix (space, permissions), not a backend bug."""


@dataclass(frozen=True)
class BackendEntry:
    """A plugin as phi3 sees it: what it said about itself, or why it is broken."""

    name: str
    distribution: str | None
    version: str | None
    info: BackendInfo | None
    error: str | None = None
    traceback: str | None = None

    @property
    def status(self) -> BackendStatus:
        if self.info is None:
            return BackendStatus.BROKEN
        return self.info.status

    @property
    def detail(self) -> str:
        if self.info is None:
            return self.error or "broken"
        return self.info.detail

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form used by ``phi3 list-backends --json``."""
        info = self.info
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "status": self.status.value,
            "detail": self.detail,
            "description": info.description if info else "",
            "engines": [dataclasses.asdict(e) for e in info.engines] if info else [],
            "default_engine": info.default_engine if info else None,
            "devices": [dataclasses.asdict(d) for d in info.devices] if info else [],
            "override_devices": [dataclasses.asdict(d) for d in info.override_devices] if info else [],
            "precisions": list(info.precisions) if info else [],
            "structured_output": list(info.structured_output) if info else [],
            "sampling": list(info.sampling) if info else [],
            "adapters": info.adapters if info else False,
            "library_versions": dict(info.library_versions) if info else {},
            "options": [spec.as_dict() for spec in info.options] if info else [],
            "artifact_options": list(info.artifact_options) if info else [],
            "load_options": list(info.load_options) if info else [],
            "api_version": info.api_version if info else None,
            "error": self.error,
        }


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _env_list(name: str) -> set[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


class PluginRegistry:
    """The pluggy manager plus the bookkeeping that keeps broken plugins contained."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self._origins: dict[str, tuple[str | None, str | None]] = {}
        self._broken: dict[str, BackendEntry] = {}
        self._probed: dict[str, BackendEntry] = {}
        self.disabled: list[str] = []

    # -- registration -------------------------------------------------------------------------

    def load_entry_points(self) -> None:
        """Register every plugin of the ``phi3`` entry-point group, honouring the env lists."""
        allow = _env_list("PHI3_LOAD_PLUGINS")
        block = _env_list("PHI3_DISABLE_PLUGINS") or set()
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if (allow is not None and ep.name not in allow) or ep.name in block:
                self.disabled.append(ep.name)
                continue
            dist = getattr(ep, "dist", None)
            dist_name = dist.name if dist is not None else None
            dist_version = dist.version if dist is not None else None
            if ep.name in self._origins or ep.name in self._broken:
                self._mark_broken(
                    ep.name,
                    dist_name,
                    dist_version,
                    f"two installed distributions register a backend named {ep.name!r}; uninstall one",
                )
                continue
            try:
                plugin = ep.load()
            except BaseException as exc:
                if isinstance(exc, KeyboardInterrupt):
                    raise
                self._mark_broken(
                    ep.name, dist_name, dist_version, f"import failed: {_one_line(exc)}", traceback.format_exc()
                )
                continue
            self.register(plugin, ep.name, distribution=dist_name, version=dist_version)

    def register(
        self, plugin: object, name: str, *, distribution: str | None = None, version: str | None = None
    ) -> None:
        """Register ``plugin`` (a module or object holding hookimpls) as backend ``name``.

        Public so that tests and applications can add a backend without installing a
        distribution. A plugin that fails validation is recorded as broken, not raised.
        """
        self._probed.pop(name, None)
        self._broken.pop(name, None)
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:  # pluggy.PluginValidationError, ValueError (duplicate) ...
            self._mark_broken(name, distribution, version, f"invalid plugin: {_one_line(exc)}", traceback.format_exc())
            return
        problem = self._validate(name)
        if problem:
            self.pm.unregister(name=name)
            self._mark_broken(name, distribution, version, problem)
            return
        self._origins[name] = (distribution, version)

    def unregister(self, name: str) -> None:
        if self.pm.has_plugin(name):
            self.pm.unregister(name=name)
        self._origins.pop(name, None)
        self._broken.pop(name, None)
        self._probed.pop(name, None)

    def _validate(self, name: str) -> str | None:
        plugin = self.pm.get_plugin(name)
        unknown = sorted(
            attr
            for attr in dir(plugin)
            if self.pm.parse_hookimpl_opts(plugin, attr) is not None and getattr(self.pm.hook, attr).spec is None
        )
        if unknown:
            return f"implements unknown hook(s) {', '.join(unknown)}; check the names in phi3.hookspecs"
        missing = [hook for hook in hookspecs.REQUIRED_HOOKS if not self.has_hook(name, hook)]
        if missing:
            return f"does not implement required hook(s) {', '.join(missing)}"
        return None

    def _mark_broken(
        self, name: str, distribution: str | None, version: str | None, error: str, tb: str | None = None
    ) -> None:
        self._broken[name] = BackendEntry(name, distribution, version, None, error, tb)

    # -- querying -----------------------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(set(self._origins) | set(self._broken))

    def entries(self) -> list[BackendEntry]:
        """Every backend, probed (cheaply), broken ones included, sorted by name."""
        return [self.entry(name) for name in self.names()]

    def entry(self, name: str) -> BackendEntry:
        if name in self._broken:
            return self._broken[name]
        if name not in self._origins:
            raise self._not_found(name)
        if name not in self._probed:
            self._probed[name] = self._probe(name)
        return self._probed[name]

    def _not_found(self, name: str) -> BackendNotFoundError:
        """Why ``name`` is not usable: disabled by the environment, or not installed."""
        if name in self.disabled:
            return BackendNotFoundError(
                f"backend {name!r} is installed but disabled by PHI3_LOAD_PLUGINS/PHI3_DISABLE_PLUGINS",
                hint="remove it from PHI3_DISABLE_PLUGINS (or add it to PHI3_LOAD_PLUGINS)",
            )
        return BackendNotFoundError(f"no backend named {name!r} is installed", hint=self.install_hint())

    def install_hint(self) -> str:
        names = [n for n in self.names() if n not in self._broken]
        if names:
            return f"installed backends: {', '.join(names)}"
        return "no backend is installed; add one, e.g. pip install phi3-openvino (or phi3-dml, phi3-npu)"

    def _probe(self, name: str) -> BackendEntry:
        distribution, version = self._origins[name]
        try:
            info = self.call(name, "phi3_backend_info")
        except Exception as exc:
            cause = exc.__cause__ if isinstance(exc, BackendError) and exc.__cause__ else exc
            return BackendEntry(
                name, distribution, version, None, f"probe failed: {_one_line(cause)}", traceback.format_exc()
            )
        if not isinstance(info, BackendInfo):
            return BackendEntry(
                name,
                distribution,
                version,
                None,
                f"phi3_backend_info returned {type(info).__name__}, not phi3.BackendInfo",
            )
        if info.api_version != hookspecs.PLUGIN_API_VERSION:
            return BackendEntry(
                name,
                distribution,
                version,
                None,
                f"written for plugin API {info.api_version}, but this phi3-core speaks "
                f"{hookspecs.PLUGIN_API_VERSION}; install matching versions of phi3-core and {distribution or name}",
            )
        if info.name != name:
            info = dataclasses.replace(info, name=name)
        return BackendEntry(name, distribution, version, info)

    # -- dispatch -----------------------------------------------------------------------------

    def has_hook(self, name: str, hook: str) -> bool:
        caller = getattr(self.pm.hook, hook)
        return any(impl.plugin_name == name for impl in caller.get_hookimpls())

    def call(self, backend: str, hook: str, /, **kwargs: Any) -> Any:
        """Call ``hook`` on ``backend`` only; vendor exceptions become one-line BackendErrors."""
        if backend not in self._origins:
            raise self._not_found(backend)
        others = [plugin for other, plugin in self.pm.list_name_plugin() if other != backend]
        caller = self.pm.subset_hook_caller(hook, remove_plugins=others)
        with self.guard(backend, hook):
            return caller(**kwargs)

    @contextlib.contextmanager
    def guard(self, name: str, what: str) -> Iterator[None]:
        """Let phi3 errors through; turn anything else into a BackendError naming the backend."""
        try:
            yield
        except Phi3Error:
            raise
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except Exception as exc:
            code = os_errno_of(exc)
            if code in USER_FIXABLE_ERRNOS:
                # a disk that filled or a folder without permission during export: the user's to fix
                raise describe_os_error(
                    OSError(code, os.strerror(code), getattr(exc, "filename", None)),
                    f"a file backend {name!r} writes in {what}",
                ) from exc
            raise BackendError(
                f"backend {name!r} failed in {what}: {_one_line(exc)}",
                hint="run with --debug for the full traceback",
            ) from exc


_registry: PluginRegistry | None = None


def get_registry() -> PluginRegistry:
    """The process-wide registry, loading entry points on first use."""
    global _registry
    if _registry is None:
        registry = PluginRegistry()
        registry.load_entry_points()
        _registry = registry
    return _registry


def reset_registry() -> None:
    """Forget loaded plugins (tests use it after changing PHI3_* env vars)."""
    global _registry
    _registry = None


def register(plugin: object, name: str) -> None:
    """Register a backend in the process-wide registry without installing a distribution."""
    get_registry().register(plugin, name)


def backends() -> list[BackendEntry]:
    """All installed backends with their status (cheap: imports no vendor library)."""
    return get_registry().entries()


__all__ = [
    "ENTRY_POINT_GROUP",
    "BackendEntry",
    "PluginError",
    "PluginRegistry",
    "backends",
    "get_registry",
    "register",
    "reset_registry",
]
