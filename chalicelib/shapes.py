"""Shared request/response building blocks."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

T = TypeVar("T")

Email = Annotated[str, StringConstraints(strip_whitespace=True, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
DisplayName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Password = Annotated[str, StringConstraints(min_length=8, max_length=128)]
Token = Annotated[str, StringConstraints(min_length=1, max_length=512)]


class Body(BaseModel):
    """A request body: unknown fields and loose types are errors."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Out(BaseModel):
    """A response body."""


class ListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=50, ge=1, le=100)
    cursor: str | None = Field(default=None, max_length=2048)


class Page(Out, Generic[T]):
    items: list[T]
    next_cursor: str | None = None
