"""Checking backend options against the typed specs a backend declares (:class:`phi3.types.OptionSpec`).

One place for every backend's option validation: phi3 coerces and checks each value here, before
any model is resolved or any hook runs, and the backend receives checked values only. Errors are
one line naming the backend, the option, the value given and what is allowed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from phi3.errors import ConfigError
from phi3.types import BackendInfo, OptionSpec

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
_SCALARS = (str, int, float, bool)


class _Refused(ValueError):
    """A value that does not fit its spec (turned into a ConfigError naming the option)."""


def _keyword(spec: OptionSpec, value: Any) -> tuple[bool, Any]:
    """``value`` as one of ``spec.choices`` or ``spec.aliases`` (case-insensitive for text)."""
    if isinstance(value, str):
        text = value.strip().lower()
        for alias, meaning in spec.aliases.items():
            if alias.lower() == text:
                return True, meaning
        for choice in spec.choices:
            if isinstance(choice, str) and choice.lower() == text:
                return True, choice
            if not isinstance(choice, str) and str(choice) == value.strip():
                return True, choice
        return False, None
    for choice in spec.choices:
        if type(choice) is type(value) and choice == value:
            return True, choice
    return False, None


def _number(spec: OptionSpec, value: Any) -> int | float:
    if isinstance(value, str):
        try:
            value = int(value.strip()) if spec.type == "int" else float(value.strip())
        except ValueError:
            raise _Refused from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Refused
    if spec.type == "int":
        if isinstance(value, float):
            if not value.is_integer():
                raise _Refused
            value = int(value)
    elif not math.isfinite(value):
        raise _Refused
    else:
        value = float(value)
    if spec.min is not None and (value < spec.min or (spec.exclusive_min and value == spec.min)):
        raise _Refused
    if spec.max is not None and value > spec.max:
        raise _Refused
    number: int | float = value
    return number


def _mapping(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise _Refused from None
    if not isinstance(value, Mapping):
        raise _Refused
    if not all(isinstance(k, str) and isinstance(v, _SCALARS) for k, v in value.items()):
        raise _Refused
    return dict(value)


def coerce(spec: OptionSpec, value: Any) -> Any:
    """``value`` checked against ``spec`` and converted to its type; raises ValueError if it does not fit."""
    found, keyword = _keyword(spec, value)
    if found:
        return keyword
    if spec.type == "choice":
        raise _Refused
    if spec.type == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in (*_TRUE, *_FALSE):
            return value.strip().lower() in _TRUE
        raise _Refused
    if spec.type == "str":
        if isinstance(value, _SCALARS) and not isinstance(value, bool):
            return str(value)
        raise _Refused
    if spec.type == "mapping":
        return _mapping(value)
    return _number(spec, value)


def check_value(backend: str, spec: OptionSpec, value: Any) -> Any:
    """``value`` coerced to ``spec``, or a one-line ConfigError naming option, value and what is allowed."""
    try:
        return coerce(spec, value)
    except ValueError:
        raise ConfigError(
            f"backend {backend} option {spec.name}={value!r} is not allowed: it takes {spec.allowed()}",
            hint=f"e.g. -O {spec.name}={_example(spec)}" + (f" ({spec.help})" if spec.help else ""),
        ) from None


def _example(spec: OptionSpec) -> str:
    if spec.default is not None and not isinstance(spec.default, Mapping):
        return str(spec.default).lower() if isinstance(spec.default, bool) else str(spec.default)
    if spec.choices:
        return str(spec.choices[0])
    return {"int": "1", "float": "1.0", "bool": "true", "mapping": "'{}'"}.get(spec.type, "...")


def _check_scope(info: BackendInfo, spec: OptionSpec, engine: str | None, precision: str | None) -> None:
    if engine is not None and spec.engines and engine not in spec.engines:
        raise ConfigError(
            f"backend {info.name} option {spec.name} applies to engine {' or '.join(spec.engines)} only, not {engine}",
            hint=f"drop {spec.name}, or pass --engine {spec.engines[0]}",
        )
    if precision is not None and spec.precisions and precision not in spec.precisions:
        raise ConfigError(
            f"backend {info.name} option {spec.name} applies to precision {' or '.join(spec.precisions)} only, "
            f"not {precision}",
            hint=f"drop {spec.name}, or pass -p {spec.precisions[0]}",
        )


def validate_options(
    info: BackendInfo, options: Mapping[str, Any], engine: str | None = None, precision: str | None = None
) -> dict[str, Any]:
    """``options`` checked against ``info``'s declarations: unknown names refused, values coerced.

    ``engine`` / ``precision``: what the user chose, checked against each spec's scope (``None``
    skips that check). Options without a spec (named in the older ``artifact_options`` /
    ``load_options`` lists only) pass through unchanged.
    """
    accepted = {*info.artifact_options, *info.load_options}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ConfigError(
            f"backend {info.name} does not accept option(s) {', '.join(unknown)}",
            hint=f"it accepts: {', '.join(sorted(accepted)) or 'no options'} (phi3 list-backends shows them)",
        )
    checked: dict[str, Any] = {}
    for name, value in options.items():
        spec = info.option(name)
        if spec is None:
            checked[name] = value
            continue
        _check_scope(info, spec, engine, precision)
        checked[name] = check_value(info.name, spec, value)
    return checked


def describe_options(info: BackendInfo) -> list[str]:
    """One line per declared option, for ``phi3 list-backends``: name, what it takes, default, help."""
    lines = []
    for spec in info.options:
        scope = [f"engine {'/'.join(spec.engines)}"] if spec.engines else []
        scope += [f"precision {'/'.join(spec.precisions)}"] if spec.precisions else []
        default = "" if spec.default is None else f"; default {spec.default}"
        where = "artifact" if spec.artifact else "load"
        extra = f"; {', '.join(scope)}" if scope else ""
        lines.append(f"{spec.name} ({where}): {spec.allowed()}{default}{extra}. {spec.help}".rstrip())
    return lines


__all__ = ["check_value", "coerce", "describe_options", "validate_options"]
