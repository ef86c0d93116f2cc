"""Tracing (OpenTelemetry API) and metrics (Prometheus), both optional and off the hot path
unless enabled. Neither library is imported until an instance is used."""

from .metrics import METRIC_NAMES, Metrics
from .saga import ObservedSagaSink
from .tracing import Tracing

__all__ = ["METRIC_NAMES", "Metrics", "ObservedSagaSink", "Tracing"]
