"""Counting what the app asks of AWS: every DynamoDB call on the one botocore client the entity models share (items
read, sizes, estimated request units, what the server reported) and the calls on another client (SQS)."""

from __future__ import annotations

import base64
import json
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

@dataclass
class DynamoCall:
    operation: str
    params: dict[str, Any]
    seconds: float = 0.0
    returned: int = 0  # items in the response (Count for Query/Scan)
    scanned: int = 0  # items DynamoDB read to answer (ScannedCount for Query/Scan; found items for the gets)
    read_sizes: list[int] = field(default_factory=list)  # estimated sizes (bytes) of the items returned
    written_size: int | None = None  # estimated size of the item after an UpdateItem (pynamodb asks for ALL_NEW)
    index_count: int = 0  # GSIs the item is in after an UpdateItem
    reported_units: float | None = None  # ConsumedCapacity.CapacityUnits as the server reported it
    error: str = ""  # the error code of a refused call (e.g. ConditionalCheckFailedException)


@dataclass
class DynamoCalls:
    """Every DynamoDB API call (and HTTP attempt, retries included) made by one botocore client.

    With `consumed_capacity=True`, `attach` also asks for `ReturnConsumedCapacity: TOTAL` on every call
    that accepts it (a `before-parameter-build` hook) and records what the server reports. Items read are
    counted from the responses (`after-call`): Count/ScannedCount of a Query, the Responses of a
    BatchGetItem/TransactGetItems, 1 for a GetItem that found its item.
    """

    calls: list[DynamoCall] = field(default_factory=list)
    http_attempts: int = 0

    def attach(self, client: Any, *, consumed_capacity: bool = False) -> None:
        events = client.meta.events
        if consumed_capacity:
            events.register("before-parameter-build.dynamodb", self._ask_for_capacity)
        events.register("before-call.dynamodb", self._before_call)
        events.register("after-call.dynamodb", self._after_call)
        events.register("before-send.dynamodb", self._before_send)

    def reset(self) -> None:
        self.calls.clear()
        self.http_attempts = 0

    @property
    def seconds(self) -> float:
        return sum(c.seconds for c in self.calls)

    @property
    def items_read(self) -> int:
        """Items DynamoDB read for these calls (scanned, so a filtered-out Query item counts)."""
        return sum(c.scanned for c in self.calls)

    @property
    def items_returned(self) -> int:
        return sum(c.returned for c in self.calls)

    @property
    def read_bytes(self) -> int:
        return sum(sum(c.read_sizes) for c in self.calls)

    @property
    def reported_units(self) -> float | None:
        reported = [c.reported_units for c in self.calls if c.reported_units is not None]
        return sum(reported) if reported else None

    @staticmethod
    def _ask_for_capacity(params: dict[str, Any], model: Any, **_: Any) -> None:
        shape = getattr(model, "input_shape", None)  # only operations whose request accepts it
        if shape is not None and "ReturnConsumedCapacity" in shape.members:
            params.setdefault("ReturnConsumedCapacity", "TOTAL")

    def _before_call(self, model: Any, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        body = params.get("body") or b"{}"
        call = DynamoCall(model.name, json.loads(body))
        self.calls.append(call)
        context["bench_call"] = (call, time.perf_counter())

    def _after_call(self, context: dict[str, Any], parsed: dict[str, Any] | None = None, **_: Any) -> None:
        call, started = context.pop("bench_call", (None, 0.0))
        if call is None:
            return
        call.seconds = time.perf_counter() - started
        parsed = parsed or {}
        call.error = str((parsed.get("Error") or {}).get("Code", ""))
        _count_items(call, parsed)
        call.reported_units = _reported_units(parsed.get("ConsumedCapacity"))

    def _before_send(self, **_: Any) -> None:
        self.http_attempts += 1

    def breakdown(self) -> str:
        """e.g. `2 GetItem, 1 TransactWriteItems[Put×2]` in call order of first appearance."""
        parts = Counter(_describe(call) for call in self.calls)
        return ", ".join(f"{n} {what}" for what, n in parts.items()) or "—"

    def capacity(self) -> tuple[float, float]:
        units = [_capacity(call) for call in self.calls]
        return sum((r for r, _ in units), 0.0), sum((w for _, w in units), 0.0)

    def index_write_units(self) -> float:
        return float(sum(_index_writes(call) for call in self.calls))


class AwsCalls:
    """API calls by operation on another botocore client (the app's SQS client, for the jobs it enqueues)."""

    def __init__(self) -> None:
        self.operations: Counter[str] = Counter()

    def attach(self, client: Any, service: str) -> None:
        client.meta.events.register(f"before-call.{service}", self._before_call)

    def reset(self) -> None:
        self.operations.clear()

    def _before_call(self, model: Any, **_: Any) -> None:
        self.operations[model.name] += 1

    def summary(self) -> str:
        return ", ".join(f"{n} {op}" for op, n in self.operations.items()) or "—"


def sqs_client() -> Any:
    """The SQS client chalicelib.jobs enqueues with (created on first use, then cached)."""
    from chalicelib import jobs

    return jobs._sqs()


def shared_client() -> Any:
    """The botocore client behind every entity model (asserting that they really share one)."""
    from chalicelib.store.table import Item

    connection = Item._get_connection()
    models = _subclasses(Item)
    separate = [m.__name__ for m in models if m._get_connection() is not connection]
    if separate:
        raise RuntimeError(f"these models do not share Item's connection: {separate}")
    return connection.connection.client


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


REFUSED = {"ConditionalCheckFailedException": "condition failed", "TransactionCanceledException": "cancelled"}


def _describe(call: DynamoCall) -> str:
    refused = f" ({REFUSED.get(call.error, call.error)})" if call.error else ""
    if call.operation in ("TransactWriteItems", "TransactGetItems"):
        kinds = Counter(next(iter(entry)) for entry in call.params.get("TransactItems", []))
        inner = ",".join(f"{kind}×{n}" if n > 1 else kind for kind, n in kinds.items())
        return f"{call.operation}[{inner}]{refused}"
    if call.operation == "BatchGetItem":
        return f"BatchGetItem[{_batch_keys(call.params)} keys]{refused}"
    if call.operation == "BatchWriteItem":
        writes = sum(len(t) for t in call.params.get("RequestItems", {}).values())
        return f"BatchWriteItem[{writes} items]{refused}"
    if call.operation == "Query" and "IndexName" in call.params:
        return f"Query({call.params['IndexName']}){refused}"
    return call.operation + refused


def _batch_keys(params: dict[str, Any]) -> int:
    return sum(len(t.get("Keys", [])) for t in params.get("RequestItems", {}).values())


def item_size(item: dict[str, Any]) -> int:
    """An item's size by DynamoDB's rules (names + values; numbers ~1 byte per 2 digits + 1), in bytes."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _value_size(value: dict[str, Any]) -> int:
    (kind, raw), = value.items()
    if kind == "S":
        return len(raw.encode())
    if kind == "N":
        return math.ceil(len(raw.lstrip("-").replace(".", "").strip("0") or "0") / 2) + 1
    if kind == "B":
        return len(base64.b64decode(raw))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "L":
        return 3 + sum(1 + _value_size(v) for v in raw)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + _value_size(v) for k, v in raw.items())
    if kind in ("SS", "NS", "BS"):
        return sum(_value_size({kind[0]: v}) for v in raw)
    return 0


def _count_items(call: DynamoCall, parsed: dict[str, Any]) -> None:
    op = call.operation
    if op in ("Query", "Scan"):
        call.returned = int(parsed.get("Count", 0))
        call.scanned = int(parsed.get("ScannedCount", call.returned))
        call.read_sizes = [item_size(i) for i in parsed.get("Items", [])]
    elif op in ("GetItem", "BatchGetItem", "TransactGetItems"):
        items = ([parsed["Item"]] if parsed.get("Item") else []) if op == "GetItem" else \
            [i for table in (parsed.get("Responses") or {}).values() for i in table] if op == "BatchGetItem" else \
            [r["Item"] for r in parsed.get("Responses") or [] if r.get("Item")]
        call.returned = call.scanned = len(items)
        call.read_sizes = [item_size(i) for i in items]
    elif op == "UpdateItem" and parsed.get("Attributes"):
        call.written_size = item_size(parsed["Attributes"])
        call.index_count = sum(1 for key in INDEX_KEYS if key in parsed["Attributes"])


def _reported_units(consumed: Any) -> float | None:
    if consumed is None:
        return None
    entries = consumed if isinstance(consumed, list) else [consumed]
    return float(sum(e.get("CapacityUnits", 0) for e in entries))


def _units(size: int, unit_bytes: int) -> int:
    return max(1, math.ceil(size / unit_bytes))


INDEX_KEYS = ("gsi1pk", "gsi2pk", "gsi3pk")


def _index_writes(call: DynamoCall) -> int:
    """A lower bound of the GSI write units: every index (all three project ALL attributes) holding an item
    that is put, or left in it by an UpdateItem, is written once per started KB. An item moved between
    index keys or removed from an index (unknown without the old item) costs more; not counted."""
    op, params = call.operation, call.params
    puts: list[dict[str, Any]] = []
    if op == "PutItem":
        puts = [params.get("Item", {})]
    elif op == "BatchWriteItem":
        puts = [w["PutRequest"]["Item"] for t in params.get("RequestItems", {}).values() for w in t if "PutRequest" in w]
    elif op == "TransactWriteItems":
        puts = [e["Put"]["Item"] for e in params.get("TransactItems", []) if "Put" in e]
    units = sum(_units(item_size(item), 1024) * sum(1 for key in INDEX_KEYS if key in item) for item in puts)
    if op == "UpdateItem" and call.written_size:
        # pynamodb's update returns ALL_NEW: the item's own index keys are in the answer, not kept here
        units += _units(call.written_size, 1024) * call.index_count
    return units


def _capacity(call: DynamoCall) -> tuple[float, float]:
    """Estimated on-demand (read, write) request units, from the sizes of the items actually read and written.

    Reads: 4 KB units, strongly consistent 1, eventually consistent ½; a Query pays for the total size of the
    items it read (those a filter dropped assumed of the returned items' average size), rounded up once (at
    least one unit); a missing item still costs one unit. Writes:
    1 KB units (an UpdateItem by the item after it, Deletes and Updates inside transactions assumed ≤ 1 KB).
    Transactional items cost double (a ConditionCheck is a transactional read). A failed conditional write
    still consumes its write units. GSI writes are estimated apart (`_index_writes`).
    """
    op, params = call.operation, call.params
    read_unit = 1.0 if params.get("ConsistentRead") else 0.5
    if op == "GetItem":
        return read_unit * _units(sum(call.read_sizes), 4096), 0.0
    if op in ("Query", "Scan"):
        size = sum(call.read_sizes)
        if call.returned and call.scanned > call.returned:  # filtered out: assume their average size
            size = size * call.scanned // call.returned
        return read_unit * _units(size, 4096), 0.0
    if op == "BatchGetItem":
        keys = _batch_keys(params)
        consistent = all(t.get("ConsistentRead") for t in params.get("RequestItems", {}).values())
        unit = 1.0 if consistent else 0.5
        found = sum(_units(size, 4096) for size in call.read_sizes)
        return unit * (found + max(0, keys - len(call.read_sizes))), 0.0
    if op == "PutItem":
        return 0.0, float(_units(item_size(params.get("Item", {})), 1024))
    if op == "UpdateItem":
        return 0.0, float(_units(call.written_size or 0, 1024))
    if op == "DeleteItem":
        return 0.0, 1.0
    if op == "BatchWriteItem":
        writes = [w for t in params.get("RequestItems", {}).values() for w in t]
        return 0.0, float(sum(_units(item_size(w["PutRequest"]["Item"]), 1024) if "PutRequest" in w else 1
                              for w in writes))
    if op == "TransactWriteItems":
        read = write = 0.0
        for entry in params.get("TransactItems", []):
            (kind, body), = entry.items()
            if kind == "ConditionCheck":
                read += 2.0
            elif kind == "Put":
                write += 2.0 * _units(item_size(body.get("Item", {})), 1024)
            else:
                write += 2.0
        return read, write
    if op == "TransactGetItems":
        return 2.0 * sum(_units(size, 4096) for size in call.read_sizes) + 2.0 * (
            len(params.get("TransactItems", [])) - len(call.read_sizes)), 0.0
    return 0.0, 0.0
