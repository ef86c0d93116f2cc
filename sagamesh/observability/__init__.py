"""Tracing (OpenTelemetry API) and metrics (Prometheus), both optional and off the hot path
unless enabled."""

from .tracing import Tracing

__all__ = ["Tracing"]
