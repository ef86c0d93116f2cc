"""Building frozen SagaEvents cheaply from decoded wire values.

A msgspec Struct with the same fields in the same order as :class:`SagaEvent` has the same
memory layout, so an instance of it can be switched to ``SagaEvent`` in place
(``obj.__class__ = SagaEvent``). That lets decoders fill a mutable or positional mirror, the
cheapest ways msgspec offers, and hand back a real, frozen ``SagaEvent`` without copying. Whether
the switch works is checked once at import; if a msgspec release ever refuses it (or the mirror
no longer matches SagaEvent), callers fall back to :func:`copy_fields`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Final

import msgspec

from ..events import SagaEvent

_FIELDS: Final = msgspec.structs.fields(SagaEvent)
FIELD_NAMES: Final = tuple(f.name for f in _FIELDS)
#: The default object itself: msgspec omits a default when encoding by identity, not equality.
NO_DURATION: Final[timedelta] = next(f.default for f in _FIELDS if f.name == "duration")


def copy_fields(mirror: Any) -> SagaEvent:
    """The portable, slower conversion: a new SagaEvent from a mirror's fields, by name."""
    return SagaEvent(**msgspec.structs.asdict(mirror))


def class_switch_works(mirror_type: Any, **required: Any) -> bool:
    """Whether ``mirror_type`` lists SagaEvent's fields in order and can become one in place."""
    if tuple(mirror_type.__struct_fields__) != FIELD_NAMES:
        return False
    probe = mirror_type(**required)
    try:
        probe.__class__ = SagaEvent
    except TypeError:  # pragma: no cover - only if msgspec changes its object layout
        return False
    return type(probe) is SagaEvent
