"""Saga data survives the JSON round trip for every supported ``data_type``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

import msgspec
import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sagamesh.errors import SerializationError
from sagamesh.saga.codec import DataCodec


@dataclass
class Item:
    sku: str
    qty: int


@dataclass
class OrderDC:
    order_id: UUID
    amount: Decimal
    created: datetime
    items: list[Item] = field(default_factory=list)
    reserved: bool = False


class OrderModel(pydantic.BaseModel):
    order_id: UUID
    amount: Decimal
    created: datetime
    items: list[dict[str, int]] = []


class OrderStruct(msgspec.Struct):
    order_id: str
    amount: float
    tags: list[str] = []


_dt = st.datetimes(timezones=st.just(UTC))
_dec = st.decimals(allow_nan=False, allow_infinity=False, places=2, min_value=0, max_value=10**6)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


def _through_json(codec: DataCodec, value: object) -> object:
    return codec.load(msgspec.json.decode(msgspec.json.encode(codec.dump(value))))


@given(st.uuids(), _dec, _dt, st.lists(st.tuples(st.text(max_size=5), st.integers(0, 99))))
def test_dataclass_round_trip(
    uid: UUID, amount: Decimal, created: datetime, items: list[tuple[str, int]]
) -> None:
    value = OrderDC(uid, amount, created, [Item(s, q) for s, q in items], reserved=True)
    assert _through_json(DataCodec(OrderDC), value) == value


@given(st.uuids(), _dec, _dt)
def test_pydantic_round_trip(uid: UUID, amount: Decimal, created: datetime) -> None:
    value = OrderModel(order_id=uid, amount=amount, created=created, items=[{"a": 1}])
    assert _through_json(DataCodec(OrderModel), value) == value


@given(st.text(max_size=8), st.floats(allow_nan=False, allow_infinity=False), st.lists(st.text()))
def test_struct_round_trip(order_id: str, amount: float, tags: list[str]) -> None:
    value = OrderStruct(order_id, amount, tags)
    assert _through_json(DataCodec(OrderStruct), value) == value


@given(_json)
def test_untyped_json_round_trip(value: object) -> None:
    assert _through_json(DataCodec(None), value) == value
    assert _through_json(DataCodec(dict), {"v": value}) == {"v": value}


def test_undumpable_value_raises_serialization_error() -> None:
    with pytest.raises(SerializationError, match="cannot be stored"):
        DataCodec(None).dump({"f": object()})


def test_data_that_does_not_fit_the_type_raises_serialization_error() -> None:
    with pytest.raises(SerializationError, match="OrderDC"):
        DataCodec(OrderDC).load({"order_id": "not-a-uuid"})
    with pytest.raises(SerializationError, match="OrderModel"):
        DataCodec(OrderModel).load({"amount": "x"})
