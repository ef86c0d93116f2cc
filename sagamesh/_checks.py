"""Checks of configuration values: each returns the value (normalised) or raises a
:class:`ConfigError` naming ``owner.name``, so every config object reports bad input alike."""

from __future__ import annotations

from typing import Any

from ._durations import require_seconds
from .errors import ConfigError


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


def checked_number(owner: str, name: str, value: Any, *, low: float,
                   high: float | None = None) -> float:
    """``value`` if it is a number (not a bool) within ``[low, high]``, else a ConfigError."""
    if (isinstance(value, bool) or not isinstance(value, int | float) or not value >= low
            or (high is not None and value > high)):
        bound = f"within [{low:g}, {high:g}]" if high is not None else f">= {low:g}"
        raise ConfigError(f"{owner}.{name} must be a number {bound}, got {value!r}", field=name)
    return float(value)
