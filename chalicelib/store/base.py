"""The single DynamoDB table: its key schema, indexes, shared connection and error translation.

Every entity is a subclass of `Item` stored in one table under `pk`/`sk`. Three sparse indexes
serve the lookups that are not by primary key (see the README's access-pattern table): `gsi1`
memberships by user, live clusters by organization and agent tokens by region, `gsi2` live clusters by region and open
operations by deadline, `gsi3` clusters whose latest generation is not yet observed.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import DeleteError, DoesNotExist, PutError, TransactWriteError, UpdateError
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from chalicelib import errors

T = TypeVar("T", bound="Item")


class Gsi1(GlobalSecondaryIndex["Item"]):
    class Meta:
        index_name = "gsi1"
        projection = AllProjection()

    gsi1pk = UnicodeAttribute(hash_key=True)
    gsi1sk = UnicodeAttribute(range_key=True)


class Gsi2(GlobalSecondaryIndex["Item"]):
    class Meta:
        index_name = "gsi2"
        projection = AllProjection()

    gsi2pk = UnicodeAttribute(hash_key=True)
    gsi2sk = UnicodeAttribute(range_key=True)


class Gsi3(GlobalSecondaryIndex["Item"]):
    class Meta:
        index_name = "gsi3"
        projection = AllProjection()

    gsi3pk = UnicodeAttribute(hash_key=True)
    gsi3sk = UnicodeAttribute(range_key=True)


class Item(Model):
    class Meta:
        table_name = "orochi"
        billing_mode = "PAY_PER_REQUEST"

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    gsi1pk = UnicodeAttribute(null=True)
    gsi1sk = UnicodeAttribute(null=True)
    gsi2pk = UnicodeAttribute(null=True)
    gsi2sk = UnicodeAttribute(null=True)
    gsi3pk = UnicodeAttribute(null=True)
    gsi3sk = UnicodeAttribute(null=True)
    expires_ttl = NumberAttribute(null=True)
    gsi1 = Gsi1()
    gsi2 = Gsi2()
    gsi3 = Gsi3()


def configure(*, table_name: str) -> None:
    """Point every entity at `table_name` and share one connection (one botocore client) between them."""
    Item.Meta.table_name = table_name
    Item._connection = None
    Item._get_connection()


def create_table() -> None:
    """Create the table with its index and TTL if it does not exist (local stack and tests)."""
    if not Item.exists():
        Item.create_table(wait=True)
    Item._get_connection().connection.client.update_time_to_live(
        TableName=Item.Meta.table_name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_ttl"},
    )


_read_ahead: ContextVar[dict[tuple[str, str], dict[str, Any] | None] | None] = ContextVar("read_ahead", default=None)


@contextmanager
def request_scope() -> Iterator[None]:
    """Within the block, items read ahead answer the first get() of their key; nothing outlives it."""
    token = _read_ahead.set({})
    try:
        yield
    finally:
        _read_ahead.reset(token)


def read_ahead(keys: list[tuple[str, str]]) -> None:
    """Fetch `keys` in one strongly consistent BatchGetItem for the current request scope.

    A request that will read several items it can name up front (its session, the caller's membership,
    the cluster in its path) pays one round trip instead of one per item.
    """
    cache = _read_ahead.get()
    wanted = [key for key in dict.fromkeys(keys) if cache is not None and key not in cache]
    if cache is None or not wanted:
        return
    table = Item.Meta.table_name
    response = Item._get_connection().batch_get_item(
        [{"pk": {"S": pk}, "sk": {"S": sk}} for pk, sk in wanted], consistent_read=True
    )
    found = {(raw["pk"]["S"], raw["sk"]["S"]): raw for raw in response.get("Responses", {}).get(table, [])}
    unprocessed = {(k["pk"]["S"], k["sk"]["S"]) for k in response.get("UnprocessedKeys", {}).get(table, {}).get("Keys", [])}
    for key in wanted:
        if key not in unprocessed:
            cache[key] = found.get(key)


def get(model: type[T], pk: str, sk: str) -> T | None:
    """A strongly consistent read (or the read-ahead copy of one, used once); None when the item is absent."""
    cache = _read_ahead.get()
    if cache is not None and (pk, sk) in cache:
        raw = cache.pop((pk, sk))
        return None if raw is None else model.from_raw_data(raw)
    try:
        return model.get(pk, sk, consistent_read=True)
    except DoesNotExist:
        return None


def condition_failed(error: Exception) -> bool:
    cause = getattr(error, "cause_response_code", None)
    return cause in ("ConditionalCheckFailedException", "TransactionCanceledException")


class ConditionFailed(Exception):
    """A transaction was cancelled because the conditions of the writes with these labels failed."""

    def __init__(self, labels: frozenset[str]) -> None:
        super().__init__(", ".join(sorted(labels)) or "a condition failed")
        self.labels = labels


class Transaction:
    """TransactWriteItems whose writes carry labels, so a cancellation tells which conditions failed."""

    def __init__(self) -> None:
        self.write = TransactWrite(connection=Item._get_connection().connection)
        self._labels: dict[str, list[str]] = {"check": [], "delete": [], "put": [], "update": []}

    def save(self, item: Item, *, condition: Any = None, label: str = "") -> None:
        self.write.save(item, condition=condition)
        self._labels["put"].append(label)

    def update(self, item: Item, *, actions: list[Any], condition: Any = None, label: str = "") -> None:
        self.write.update(item, actions=actions, condition=condition)
        self._labels["update"].append(label)

    def delete(self, item: Item, *, condition: Any = None, label: str = "") -> None:
        self.write.delete(item, condition=condition)
        self._labels["delete"].append(label)

    def check(self, model: type[Item], pk: str, sk: str, *, condition: Any, label: str = "") -> None:
        self.write.condition_check(model, pk, sk, condition=condition)
        self._labels["check"].append(label)

    def failed_labels(self, error: TransactWriteError, code: str = "ConditionalCheckFailed") -> frozenset[str]:
        # pynamodb sends condition checks, then deletes, then puts, then updates, whatever the order of the calls.
        sent = [label for kind in ("check", "delete", "put", "update") for label in self._labels[kind]]
        reasons = getattr(error, "cancellation_reasons", None) or []
        return frozenset(
            label for label, reason in zip(sent, reasons) if reason is not None and getattr(reason, "code", None) == code
        )


@contextmanager
def transaction() -> Iterator[Transaction]:
    """Commit the writes made in the block atomically.

    Raises ConditionFailed naming the writes whose conditions failed, or Contention when DynamoDB cancelled
    the transaction only because another one was writing the same items at the same moment.
    """
    tx = Transaction()
    try:
        with tx.write:
            yield tx
    except TransactWriteError as e:
        if not condition_failed(e):
            raise
        failed = tx.failed_labels(e)
        if not failed and tx.failed_labels(e, "TransactionConflict"):
            raise errors.Contention("the record was being changed by another request at the same moment; retry") from e
        raise ConditionFailed(failed) from e


@contextmanager
def conditional(conflict: errors.AppError) -> Iterator[None]:
    """Translate a failed write condition into `conflict`; other failures propagate."""
    try:
        yield
    except ConditionFailed as e:
        raise conflict from e
    except (PutError, UpdateError, DeleteError) as e:
        if condition_failed(e):
            raise conflict from e
        raise


def encode_cursor(last_key: dict[str, Any] | None) -> str | None:
    if not last_key:
        return None
    flat = {name: next(iter(value.values())) for name, value in last_key.items()}
    return base64.urlsafe_b64encode(json.dumps(flat, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, *, pk: str) -> dict[str, Any] | None:
    """The exclusive start key for a query on partition `pk`; a cursor from another listing is invalid."""
    if not cursor:
        return None
    try:
        flat = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(flat, dict) or not all(isinstance(v, str) for v in flat.values()):
            raise ValueError
        if pk not in (flat.get("pk"), flat.get("gsi1pk"), flat.get("gsi2pk")):
            raise ValueError
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise errors.Invalid("cursor is not valid", details=[{"field": "cursor", "message": "not a cursor from this listing"}]) from None
    return {name: {"S": value} for name, value in flat.items()}
