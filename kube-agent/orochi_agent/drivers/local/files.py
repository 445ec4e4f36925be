"""Small private files: written atomically, mode 0600, and only when their content changes."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from orochi_agent.drivers.local.accounts import Account


def write_private(path: Path, text: str, *, account: Account | None = None) -> bool:
    """Make `path` hold `text` (mode 0600, owned by `account` when given). True when it wrote."""
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    staging = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        if account is not None:
            account.own(staging)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)
    return True
