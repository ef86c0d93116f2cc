"""Durations are accepted as seconds (float) or ``timedelta`` everywhere; this normalises them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from .errors import ConfigError

Duration = float | int | timedelta


def seconds(value: Duration | None) -> float | None:
    """Seconds as a float, keeping ``None`` (meaning: no limit)."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


def require_seconds(value: Duration) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


def checked_seconds(owner: str, name: str, value: Any, *, positive: bool) -> float:
    """``value`` as seconds, or a ConfigError naming ``owner.name`` (NaN, negative, or zero
    when ``positive``)."""
    try:
        result = require_seconds(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{owner}.{name} must be seconds (float) or a timedelta, "
                          f"got {value!r}", field=name) from None
    if result != result or result < 0 or (positive and result == 0):  # NaN, negative, zero
        bound = "> 0" if positive else ">= 0"
        raise ConfigError(f"{owner}.{name} must be {bound}, got {value!r}", field=name)
    return result


def checked_count(owner: str, name: str, value: Any, *, minimum: int) -> int:
    """``value`` if it is an integer >= ``minimum`` (not a bool), else a ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{owner}.{name} must be an integer >= {minimum}, got {value!r}",
                          field=name)
    return value
