"""The configuration's validation engine, shared by every section's parser: ``Section`` reads one
mapping, remembering the keys it consumed, so unknown keys and bad values raise ``ConfigError``
naming the dotted key and the file it came from."""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

MISSING = object()


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid; the message names the key."""


class Section:
    """Reads one mapping of the config, remembering which keys were consumed."""

    def __init__(self, data: Any, path: str, source: str):
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: '{path}' must be a mapping, got {type(data).__name__}")
        self.data, self.path, self.source = dict(data), path, source
        self._seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: '{self.key(name)}' {message}")

    def get(self, name: str, kind: Callable[[Any], Any] | type = str, default: Any = MISSING,
            check: Callable[[Any], bool] | None = None, expect: str = "") -> Any:
        self._seen.add(name)
        if name not in self.data or self.data[name] is None:
            if default is MISSING:
                raise self.fail(name, "is required")
            return default
        raw = self.data[name]
        try:
            value = _coerce(raw, kind)
        except (TypeError, ValueError):
            raise self.fail(name, f"must be {expect or _kind_name(kind)}, got {raw!r}") from None
        if check is not None and not check(value):
            raise self.fail(name, f"must be {expect or 'valid'}, got {raw!r}")
        return value

    def sub(self, name: str, default: Any = MISSING) -> Section:
        self._seen.add(name)
        if name not in self.data or self.data[name] is None:
            if default is MISSING:
                raise self.fail(name, "is required")
            return Section(default, self.key(name), self.source)
        return Section(self.data[name], self.key(name), self.source)

    def str_list(self, name: str, default: Any = MISSING) -> tuple[str, ...]:
        self._seen.add(name)
        raw = self.data.get(name, default)
        if raw is MISSING:
            raise self.fail(name, "is required")
        if not isinstance(raw, list) or not all(isinstance(v, str) and v for v in raw):
            raise self.fail(name, f"must be a list of names, got {raw!r}")
        if len(set(raw)) != len(raw):
            raise self.fail(name, f"lists a name twice: {raw!r}")
        return tuple(raw)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self._seen)
        if unknown:
            raise ConfigError(
                f"{self.source}: unknown key(s) {', '.join(repr(self.key(k)) for k in unknown)}"
                f" (allowed: {', '.join(sorted(self._seen))})")


def _kind_name(kind: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        kind, getattr(kind, "__name__", str(kind)))


def _coerce(raw: Any, kind: Any) -> Any:
    if kind is bool:
        if not isinstance(raw, bool):
            raise TypeError
        return raw
    if kind is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise TypeError
        return raw
    if kind is float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise TypeError
        return float(raw)
    if kind is str:
        if not isinstance(raw, str):
            raise TypeError
        return raw
    return kind(raw)


def positive(v: float) -> bool:
    return v > 0


def probability(v: float) -> bool:
    return 0.0 <= v <= 1.0


def rate(v: float) -> bool:
    return 0.0 < v <= 1.0


def iso_date(raw: Any) -> dt.date:
    if isinstance(raw, dt.date):
        return raw
    return dt.date.fromisoformat(str(raw))


def int_list(v: Any) -> tuple[int, ...]:
    if not isinstance(v, list) or not v or not all(isinstance(i, int) and not isinstance(i, bool)
                                                   and i > 0 for i in v):
        raise ValueError
    return tuple(v)


def rate_list(v: Any) -> tuple[float, ...]:
    if not isinstance(v, list) or not v or len(set(v)) != len(v) or not all(
            isinstance(r, (int, float)) and not isinstance(r, bool) and 0 < r <= 1 for r in v):
        raise ValueError
    return tuple(float(r) for r in v)
