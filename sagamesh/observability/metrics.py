"""Prometheus metrics: counters and histograms for publish, consume, DLQ, sagas and steps.

Each :class:`Metrics` owns its own ``CollectorRegistry`` (no global state), so two instances
in one process (or one per test) never collide. ``serve()`` exposes ``/metrics``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0, 30.0)
SAGA_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)

METRIC_NAMES = {
    "published_total": "events published, by topic and outcome (ok|failed|dead_lettered)",
    "publish_latency_seconds": "confirmed publish latency, by topic",
    "publish_retries_total": "publish retries, by topic",
    "consumed_total": "events consumed, by handler and outcome (ok|failed|retried|dead_lettered|"
                      "skipped)",
    "consume_latency_seconds": "handler processing time, by handler",
    "dlq_messages_total": "messages sent to the dead-letter queue, by reason",
    "sagas_total": "sagas finished, by definition and outcome (completed|compensated|failed|"
                   "cancelled|timed_out)",
    "saga_duration_seconds": "saga duration, by definition",
    "steps_total": "step executions, by definition, step and outcome",
    "step_duration_seconds": "step duration, by definition and step",
    "active_sagas": "sagas running now, by definition",
}


@dataclass
class Metrics:
    namespace: str = "sagamesh"
    registry: Any = None
    _m: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        if self.registry is None:
            self.registry = CollectorRegistry()
        ns, reg = self.namespace, self.registry
        self._m = {
            "published_total": Counter("published_total", METRIC_NAMES["published_total"],
                                       ["topic", "outcome"], namespace=ns, registry=reg),
            "publish_latency_seconds": Histogram(
                "publish_latency_seconds", METRIC_NAMES["publish_latency_seconds"], ["topic"],
                namespace=ns, registry=reg, buckets=LATENCY_BUCKETS),
            "publish_retries_total": Counter("publish_retries_total",
                                             METRIC_NAMES["publish_retries_total"], ["topic"],
                                             namespace=ns, registry=reg),
            "consumed_total": Counter("consumed_total", METRIC_NAMES["consumed_total"],
                                      ["handler", "outcome"], namespace=ns, registry=reg),
            "consume_latency_seconds": Histogram(
                "consume_latency_seconds", METRIC_NAMES["consume_latency_seconds"], ["handler"],
                namespace=ns, registry=reg, buckets=LATENCY_BUCKETS),
            "dlq_messages_total": Counter("dlq_messages_total", METRIC_NAMES["dlq_messages_total"],
                                          ["reason"], namespace=ns, registry=reg),
            "sagas_total": Counter("sagas_total", METRIC_NAMES["sagas_total"],
                                   ["definition", "outcome"], namespace=ns, registry=reg),
            "saga_duration_seconds": Histogram(
                "saga_duration_seconds", METRIC_NAMES["saga_duration_seconds"], ["definition"],
                namespace=ns, registry=reg, buckets=SAGA_BUCKETS),
            "steps_total": Counter("steps_total", METRIC_NAMES["steps_total"],
                                   ["definition", "step", "outcome"], namespace=ns, registry=reg),
            "step_duration_seconds": Histogram(
                "step_duration_seconds", METRIC_NAMES["step_duration_seconds"],
                ["definition", "step"], namespace=ns, registry=reg, buckets=LATENCY_BUCKETS),
            "active_sagas": Gauge("active_sagas", METRIC_NAMES["active_sagas"], ["definition"],
                                  namespace=ns, registry=reg),
        }

    # Recording API: one call per fact, labels spelled out.
    def published(self, topic: str, outcome: str, latency: float | None = None) -> None:
        self._m["published_total"].labels(topic, outcome).inc()
        if latency is not None:
            self._m["publish_latency_seconds"].labels(topic).observe(latency)

    def publish_retry(self, topic: str) -> None:
        self._m["publish_retries_total"].labels(topic).inc()

    def consumed(self, handler: str, outcome: str, duration: float | None = None) -> None:
        self._m["consumed_total"].labels(handler, outcome).inc()
        if duration is not None:
            self._m["consume_latency_seconds"].labels(handler).observe(duration)

    def dead_lettered(self, reason: str) -> None:
        self._m["dlq_messages_total"].labels(reason).inc()

    def saga_started(self, definition: str) -> None:
        self._m["active_sagas"].labels(definition).inc()

    def saga_finished(self, definition: str, outcome: str, duration: float) -> None:
        self._m["active_sagas"].labels(definition).dec()
        self._m["sagas_total"].labels(definition, outcome).inc()
        self._m["saga_duration_seconds"].labels(definition).observe(duration)

    def step(self, definition: str, step: str, outcome: str, duration: float) -> None:
        self._m["steps_total"].labels(definition, step, outcome).inc()
        self._m["step_duration_seconds"].labels(definition, step).observe(duration)

    def value(self, name: str, **labels: str) -> float:
        """Current value of a sample (for tests and the CLI)."""
        full = f"{self.namespace}_{name}"
        result = self.registry.get_sample_value(full, labels)
        if result is None:
            result = self.registry.get_sample_value(f"{full}_total", labels)
        return float(result or 0.0)

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        data: bytes = generate_latest(self.registry)
        return data

    def serve(self, host: str = "127.0.0.1", port: int = 9464) -> Any:
        """Serve ``/metrics`` over HTTP in a daemon thread; returns the server (call
        ``shutdown()`` on it to stop)."""
        from prometheus_client import start_http_server

        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server
