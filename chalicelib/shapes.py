"""Shared request/response building blocks."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

T = TypeVar("T")

# Patterns are checked by pydantic's Rust regex and, from the OpenAPI document, by ECMA-262 clients. Their `\s`
# differ (U+0085 is whitespace to Rust only, U+FEFF to ECMA only), so those are spelled out to make both agree.
Email = Annotated[str, StringConstraints(
    strip_whitespace=True, max_length=254, pattern=r"^[^@\s\u0085\uFEFF]+@[^@\s\u0085\uFEFF]+\.[^@\s\u0085\uFEFF]+$",
)]
# Not blank once stripped: a character that is whitespace to neither regex flavour.
DisplayName = Annotated[str, StringConstraints(
    strip_whitespace=True, min_length=1, max_length=100, pattern=r"[^\s\u0085]",
)]
Password = Annotated[str, StringConstraints(min_length=8, max_length=128)]
Token = Annotated[str, StringConstraints(min_length=1, max_length=512)]


# Every model defers building its validator and serializer to its first use (`defer_build`): a cold start
# pays only for the models its first request touches, not for all of them (see docs/benchmarks.md).


class Body(BaseModel):
    """A request body: unknown fields and loose types are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)


class Out(BaseModel):
    """A response body."""

    model_config = ConfigDict(defer_build=True)


class Query(BaseModel):
    """A query string: unknown parameters are errors; values arrive as strings and are coerced."""

    model_config = ConfigDict(extra="forbid", defer_build=True)


class ListQuery(Query):
    limit: int = Field(default=50, ge=1, le=100)
    cursor: str | None = Field(default=None, max_length=2048)


class Page(Out, Generic[T]):
    items: list[T]
    next_cursor: str | None = None
