"""The single DynamoDB table: its indexes, shared connection, transactions, pages and what failed.

Every entity is a subclass of `Item` stored in one table under `pk`/`sk`; `keys` spells every key.
The store reports storage facts — a write's condition failed (naming which), another writer got there
first, a page ended here — and leaves what they mean to a user to the domain.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pynamodb.attributes import Attribute, UnicodeAttribute
from pynamodb.connection import TableConnection
from pynamodb.constants import NUMBER
from pynamodb.exceptions import DeleteError, DoesNotExist, PutError, QueryError, TransactWriteError, UpdateError
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model
from pynamodb.pagination import ResultIterator
from pynamodb.transactions import TransactWrite

T = TypeVar("T", bound="Item")
Key = tuple[str, str]
StartKey = dict[str, Any]


class IntegerAttribute(Attribute[int]):
    """A whole number stored as DynamoDB's `N` (times in epoch seconds, counts, generations), read back as an int."""

    attr_type = NUMBER

    def serialize(self, value: int) -> str:
        return str(int(value))

    def deserialize(self, value: str) -> int:
        return int(value)


class OptionalIntegerAttribute(Attribute[int | None]):
    """An IntegerAttribute that may be absent (None), typed so: pynamodb types `null=True` attributes as never None."""

    attr_type = NUMBER

    def __init__(self, *, attr_name: str | None = None) -> None:
        super().__init__(null=True, attr_name=attr_name)

    def serialize(self, value: int | None) -> str:
        if value is None:  # pynamodb leaves an absent attribute out of the item and never asks
            raise ValueError("an absent attribute has no stored form")
        return str(int(value))

    def deserialize(self, value: str) -> int | None:
        return int(value)


# pynamodb's Index.__init_subclass__ carries no annotations, hence the ignores on the three index classes.
class Gsi1(GlobalSecondaryIndex["Item"]):  # type: ignore[no-untyped-call]  # pynamodb's Index.__init_subclass__ is unannotated
    class Meta:
        index_name = "gsi1"
        projection = AllProjection()

    gsi1pk = UnicodeAttribute(hash_key=True)
    gsi1sk = UnicodeAttribute(range_key=True)


class Gsi2(GlobalSecondaryIndex["Item"]):  # type: ignore[no-untyped-call]  # as Gsi1
    class Meta:
        index_name = "gsi2"
        projection = AllProjection()

    gsi2pk = UnicodeAttribute(hash_key=True)
    gsi2sk = UnicodeAttribute(range_key=True)


class Gsi3(GlobalSecondaryIndex["Item"]):  # type: ignore[no-untyped-call]  # as Gsi1
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
    expires_ttl = OptionalIntegerAttribute()
    gsi1 = Gsi1()
    gsi2 = Gsi2()
    gsi3 = Gsi3()

    @classmethod
    def _get_connection(cls) -> TableConnection:
        """pynamodb's shared connection, whose botocore client counts its calls (`counting_calls`).

        pynamodb asks for it right before every call it makes, so the client is created (and hooked) only when a
        call is about to be made: a request that makes none creates none.
        """
        connection = super()._get_connection()
        _count_calls_of(connection.connection.client)
        return connection


def configure(*, table_name: str) -> None:
    """Point every entity at `table_name` and share one connection (one botocore client) between them."""
    Item.Meta.table_name = table_name
    Item._connection = None
    super(Item, Item)._get_connection()  # the connection now, its client on the first call (not at import)


def create_table() -> None:
    """Create the table with its index and TTL if it does not exist (local stack and tests)."""
    if not Item.exists():
        Item.create_table(wait=True)
    client: Any = Item._get_connection().connection.client  # pynamodb types its botocore client as a private base
    client.update_time_to_live(
        TableName=Item.Meta.table_name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_ttl"},
    )


@dataclass
class Calls:
    """DynamoDB API calls made so far within a `counting_calls()` block (a retried call counts once)."""

    made: int = 0


_calls: ContextVar[Calls | None] = ContextVar("dynamodb_calls", default=None)


def _count_call(**_: Any) -> None:
    calls = _calls.get()
    if calls is not None:
        calls.made += 1


_hooked: list[object] = []  # the client the hook is on (pynamodb makes a new one if its credentials went missing)


def _count_calls_of(client: Any) -> None:
    if not _hooked or _hooked[0] is not client:
        client.meta.events.register("before-call.dynamodb", _count_call, unique_id="orochi-count-dynamodb-calls")
        _hooked[:] = [client]


@contextmanager
def counting_calls() -> Iterator[Calls]:
    """Count the DynamoDB calls made within the block, at the botocore boundary: a `before-call` hook on the shared
    client (see `Item._get_connection`), one per API call whatever its retries."""
    calls = Calls()
    token = _calls.set(calls)
    try:
        yield calls
    finally:
        _calls.reset(token)


_read_ahead: ContextVar[dict[Key, dict[str, Any] | None] | None] = ContextVar("read_ahead", default=None)


@contextmanager
def request_scope() -> Iterator[None]:
    """Within the block, items read ahead answer the first get() of their key; nothing outlives it."""
    token = _read_ahead.set({})
    try:
        yield
    finally:
        _read_ahead.reset(token)


def read_ahead(keys: list[Key]) -> None:
    """Fetch `keys` in one strongly consistent BatchGetItem for the current request scope.

    A request that will read several items it can name up front (its session, the caller's membership,
    the cluster in its path) pays one round trip instead of one per item.
    """
    cache = _read_ahead.get()
    wanted = [key for key in dict.fromkeys(keys) if cache is not None and key not in cache]
    if cache is None or not wanted:
        return
    table = Item.Meta.table_name
    connection: Any = Item._get_connection()  # pynamodb annotates batch_get_item's keys as strings; they are key maps
    response = connection.batch_get_item(
        [{"pk": {"S": pk}, "sk": {"S": sk}} for pk, sk in wanted], consistent_read=True
    )
    found = {(raw["pk"]["S"], raw["sk"]["S"]): raw for raw in response.get("Responses", {}).get(table, [])}
    unprocessed = {(k["pk"]["S"], k["sk"]["S"]) for k in response.get("UnprocessedKeys", {}).get(table, {}).get("Keys", [])}
    for key in wanted:
        if key not in unprocessed:
            cache[key] = found.get(key)


def get(model: type[T], key: Key) -> T | None:
    """A strongly consistent read (or the read-ahead copy of one, used once); None when the item is absent."""
    cache = _read_ahead.get()
    if cache is not None and key in cache:
        raw = cache.pop(key)
        return None if raw is None else model.from_raw_data(raw)
    try:
        return model.get(*key, consistent_read=True)
    except DoesNotExist:
        return None


class ConditionFailed(Exception):
    """The condition of a write failed; `labels` name which writes of a transaction (empty for a single write)."""

    def __init__(self, labels: frozenset[str] = frozenset()) -> None:
        super().__init__(", ".join(sorted(labels)) or "a condition failed")
        self.labels = labels


class LostRace(Exception):
    """Another writer changed what this write depended on in between: read again and retry."""


class Contention(LostRace):
    """DynamoDB cancelled a transaction only because another one was writing the same items at that moment."""


class BadStartKey(Exception):
    """DynamoDB refused the start key of a query."""


class Throttled(Exception):
    """DynamoDB refused a request for want of capacity, after the client's own retries."""


# What DynamoDB answers a request over its capacity: the error of a call, and the reason of a cancelled transaction item.
_THROTTLING_ERRORS = frozenset({"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"})
_THROTTLING_REASON = "ThrottlingError"


def throttled(error: BaseException) -> bool:
    """Whether `error` (or what caused it) is DynamoDB refusing for want of capacity."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, Throttled) or getattr(seen, "cause_response_code", None) in _THROTTLING_ERRORS:
            return True
        seen = seen.__cause__
    return False


def _condition_failed(error: Exception) -> bool:
    return getattr(error, "cause_response_code", None) in ("ConditionalCheckFailedException", "TransactionCanceledException")


@contextmanager
def condition() -> Iterator[None]:
    """Raise ConditionFailed when the single conditional write in the block fails its condition."""
    try:
        yield
    except (PutError, UpdateError, DeleteError) as e:
        if _condition_failed(e):
            raise ConditionFailed() from e
        raise


def written(write: Callable[[], object]) -> bool:
    """Run one conditional write: True if it was made, False if its condition failed."""
    try:
        with condition():
            write()
    except ConditionFailed:
        return False
    return True


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

    def check(self, model: type[Item], key: Key, *, condition: Any, label: str = "") -> None:
        self.write.condition_check(model, *key, condition=condition)
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

    Raises ConditionFailed naming the writes whose conditions failed, Contention when DynamoDB cancelled
    the transaction only because another one was writing the same items at the same moment, or Throttled when it
    cancelled it for want of capacity.
    """
    tx = Transaction()
    try:
        with tx.write:
            yield tx
    except TransactWriteError as e:
        if not _condition_failed(e):
            raise
        failed = tx.failed_labels(e)
        if not failed and tx.failed_labels(e, _THROTTLING_REASON):
            raise Throttled() from e
        if not failed and tx.failed_labels(e, "TransactionConflict"):
            raise Contention() from e
        raise ConditionFailed(failed) from e


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a query and the key to start the next one from (None after the last page)."""

    items: list[T]
    last_key: StartKey | None


def page(query: Callable[[StartKey | None], ResultIterator[T]], start: StartKey | None) -> Page[T]:
    """Run one page of `query(start key)`; BadStartKey when DynamoDB refuses the start key."""
    try:
        results = query(start)
        items = list(results)
    except QueryError as e:
        if start is not None and getattr(e, "cause_response_code", None) == "ValidationException":
            raise BadStartKey() from e
        raise
    return Page(items, results.last_evaluated_key)
