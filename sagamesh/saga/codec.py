"""How saga data crosses into durable storage and back: the definition's ``data_type`` decides.

Durable stores hold JSON. The coordinator dumps each value it persists (saga input, every step's
output, the result) to JSON-able builtins with :meth:`DataCodec.dump` and rehydrates them after a
restart with :meth:`DataCodec.load`:

* a pydantic model class → ``model_dump(mode="json")`` / ``model_validate``;
* a dataclass, ``msgspec.Struct``, ``TypedDict``, ``dict[str, X]``… → ``msgspec.to_builtins`` /
  ``msgspec.convert`` (datetimes, UUIDs, enums and nested types restored);
* ``None`` (untyped) → builtins as they are; JSON-able values only.

Values that cannot be dumped or loaded raise :class:`~sagamesh.errors.SerializationError`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..errors import SerializationError


def _is_pydantic_model(tp: Any) -> bool:
    return isinstance(tp, type) and callable(getattr(tp, "model_validate", None)) and callable(
        getattr(tp, "model_dump", None)
    )


def _enc_hook(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)  # pydantic values nested in untyped data
    if callable(dump):
        return dump(mode="json")
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=repr)
    raise NotImplementedError(f"{type(obj).__name__} is not JSON-able")


class DataCodec:
    """Dump/load of one data type (``None`` means untyped JSON-able data)."""

    __slots__ = ("_pydantic", "data_type")

    def __init__(self, data_type: Any = None) -> None:
        self.data_type = data_type
        self._pydantic = _is_pydantic_model(data_type)

    def dump(self, value: Any) -> Any:
        """JSON-able builtins for ``value`` (dicts, lists, str, int, float, bool, None)."""
        if value is None or isinstance(value, str | int | float | bool):
            return value
        try:
            if self._pydantic and isinstance(value, self.data_type):
                return value.model_dump(mode="json")
            return msgspec.to_builtins(value, enc_hook=_enc_hook)
        except (NotImplementedError, TypeError, ValueError) as exc:
            raise SerializationError(
                f"saga data of type {type(value).__name__} cannot be stored as JSON: {exc}"
            ) from exc

    def load(self, raw: Any) -> Any:
        """The typed value for ``raw`` builtins (identity when untyped or ``raw`` is None)."""
        if raw is None or self.data_type is None or self.data_type is Any:
            return raw
        try:
            if self._pydantic:
                if isinstance(raw, self.data_type):
                    return raw
                return self.data_type.model_validate(raw)
            return msgspec.convert(raw, self.data_type, strict=False)
        except Exception as exc:  # pydantic.ValidationError, msgspec.ValidationError, ...
            name = getattr(self.data_type, "__name__", repr(self.data_type))
            raise SerializationError(f"stored saga data does not fit {name}: {exc}") from exc

    def roundtrip(self, value: Any) -> Any:
        return self.load(self.dump(value))


UNTYPED = DataCodec(None)
