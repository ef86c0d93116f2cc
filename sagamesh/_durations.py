"""Durations are accepted as seconds (float) or ``timedelta`` everywhere; this normalises them."""

from __future__ import annotations

from datetime import timedelta

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

