"""The order-processing demo behind ``sagamesh demo``."""

from .order import OrderData, OrderItem, Services, order_saga, sample_order
from .runner import DemoReport, run_demo

__all__ = [
    "DemoReport",
    "OrderData",
    "OrderItem",
    "Services",
    "order_saga",
    "run_demo",
    "sample_order",
]
