"""Names and arguments of the queues the adapter declares (one place, so tests can find them)."""

from __future__ import annotations

import math
import uuid

from sagamesh.brokers.amqp_wire import fit_name, group_queue, valid_name

__all__ = ["group_queue", "valid_name"]

def anonymous_queue(exchange: str, topic: str) -> str:
    """A private queue for a subscription without a group (exclusive, deleted with it)."""
    return fit_name(f"{exchange}:{topic}:@anon-{uuid.uuid4().hex[:12]}")


def delay_bucket_ms(delay: float) -> int:
    """``delay`` seconds as milliseconds rounded to two significant digits.

    One delay queue exists per bucket and target queue; rounding keeps their number small
    (0.123 s and 0.125 s share the 120 ms queue) at the cost of at most 5 % of the delay.
    """
    ms = max(1, round(delay * 1000))
    if ms < 100:
        return ms
    scale = 10 ** (int(math.log10(ms)) - 1)
    return int(round(ms / scale) * scale)


def delay_queue(target: str, ms: int) -> str:
    return fit_name(f"{target}:delay:{ms}ms")


def delay_arguments(target: str, ms: int, margin_ms: int) -> dict[str, object]:
    """Hold messages ``ms`` then dead-letter them straight into ``target`` via the default
    exchange (not the topic exchange, so other groups never see the retry)."""
    return {
        "x-message-ttl": ms,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": target,
        "x-expires": ms + margin_ms,
    }


def group_arguments(*, ordered: bool, queue_type: str) -> dict[str, object]:
    args: dict[str, object] = {}
    if queue_type != "classic":
        args["x-queue-type"] = queue_type
    if ordered:
        # One active consumer per group: competing members cannot split a key between them.
        args["x-single-active-consumer"] = True
    return args
