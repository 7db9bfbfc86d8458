"""Plain-dataclass configs: building them from dicts (YAML, ``--set``) with checked keys and types.

Every config in genmodels is a ``@dataclass`` with typed defaults. ``from_dict`` rejects an unknown
key with the closest valid one, coerces YAML lists to tuples and ints to floats, and raises a
one-line ``ConfigError`` naming the key, the bad value and what is expected.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from genmodels.errors import ConfigError, closest

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert the harmless cases."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(e)
        names = " or ".join(_type_name(a) for a in args)
        raise ConfigError(f"config key '{key}' must be {names}, got {value!r}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"config key '{key}' must have {len(args)} entries, got {value!r}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args, strict=True))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
    if origin is typing.Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"config key '{key}' must be one of {list(typing.get_args(tp))}, got {value!r}")
    return value


def field_names(cls: type) -> list[str]:
    """The field names of a config dataclass."""
    return [f.name for f in dataclasses.fields(cls)]


def from_dict(cls: type[T], values: Mapping[str, Any], *, section: str = "") -> T:
    """Build the dataclass ``cls`` from ``values``, checking every key and value.

    Args:
        cls: a config dataclass.
        values: field values; missing fields take their defaults.
        section: the name used in error messages (``train`` gives ``train.lr``).
    """
    hints = typing.get_type_hints(cls)
    names = field_names(cls)
    prefix = f"{section}." if section else ""
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            guess = closest(key, names)
            hint = f"did you mean '{prefix}{guess}'?" if guess else f"valid keys: {', '.join(names)}"
            raise ConfigError(f"unknown config key '{prefix}{key}'; {hint}")
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field without default
        raise ConfigError(f"bad {section or cls.__name__} config: {e}") from None


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass as a plain dict with tuples turned into lists (YAML- and JSON-friendly)."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(config).items()}


def parse_set(items: list[str]) -> dict[str, Any]:
    """Parse ``--set key=value`` items; values are read as YAML scalars (1e-3, true, [1, 2], null)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value (e.g. --set train.lr=1e-3), got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        # YAML 1.1 reads 1e-3 as a string; numbers written that way are meant as floats.
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value)
        out[key] = value
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path`` with a one-line error for a missing or malformed file."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {p}: {e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where else ""
        raise ConfigError(f"config file {p} is not valid YAML{at}; fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of sections (model, train, data)")
    return data
