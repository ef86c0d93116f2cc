"""What callers get back for a saga: a copy, never the record the engine keeps mutating, with
data decoded through the definition's codecs when the storage holds JSON rather than objects."""

from __future__ import annotations

from typing import Any

from ._clone import clone_instance
from .plan import Plan
from .state import SagaInstance, SagaState


class Presenter:
    """Presents live and stored sagas; ``plans`` is the coordinator's own table."""

    def __init__(self, plans: dict[str, Plan], *, objects: bool) -> None:
        self._plans = plans
        self._objects = objects

    def present(self, instance: SagaInstance, data: Any) -> SagaInstance:
        """A live saga, with ``data`` (the decoded form of its stored data)."""
        out = clone_instance(instance)
        if not self._objects:
            out.data = data
            if instance.state is SagaState.COMPLETED:
                out.result = data
        return out

    def present_stored(self, stored: SagaInstance) -> SagaInstance:
        """A saga read from storage (a fresh record the caller may keep)."""
        if self._objects:
            return stored
        plan = self._plans.get(stored.definition_id)
        if plan is None:
            return stored
        stored.data = plan.data_codec(stored.current_step).load(stored.data)
        if stored.result is not None and plan.steps:
            stored.result = plan.steps[-1].codec.load(stored.result)
        return stored
