"""examples/faststream_app.py works as shipped (on FastStream's TestNatsBroker, with its app
lifespan) and documents its subscriber in AsyncAPI."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from faststream import TestApp
from faststream.nats import TestNatsBroker

from sagamesh.events import EventType, SagaEvent
from sagamesh.faststream.bindings import binding_for
from sagamesh.serialization import get_serializer, to_message

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "faststream_app.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("faststream_app_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_example_app_routes_by_priority_and_filter() -> None:
    example = _load()
    send = binding_for(example.broker).wire_publisher("saga.events")
    json = get_serializer("json")
    async with TestNatsBroker(example.broker), TestApp(example.app):
        for saga_id, tenant, kind in (("o-1", "acme", EventType.SAGA_COMPLETED),
                                      ("o-2", "other", EventType.SAGA_COMPLETED),
                                      ("o-3", "other", EventType.SAGA_FAILED)):
            event = SagaEvent(saga_id=saga_id, type=kind, metadata={"tenant": tenant})
            await send(to_message(event, "saga.events", json))
    assert example.outcomes == {"acme:saga.completed": 1, "saga.completed": 1,
                                "saga.failed": 1}
    assert example.mounted.get_metrics().acked == 3
    channels = example.app.schema.to_specification().to_jsonable()["channels"]
    assert "sagamesh:saga.events:order-outcomes" in channels
