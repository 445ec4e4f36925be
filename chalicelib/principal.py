"""Who is calling."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Principal:
    """A user with a login session, or the agent of one region."""

    kind: Literal["user", "agent"]
    id: str
    session_id: str = ""
    region: str = ""
