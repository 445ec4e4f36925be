"""schemathesis hooks for tests/test_schemathesis.py (its Python-API runs and its CLI runs load this one file).

Two kinds of "valid data rejected" failures are not the API's, and only those are dropped:

- A list's `cursor` is opaque: the document states its alphabet and length, but only a `next_cursor` that the
  same listing handed out is one, so a generated cursor is refused with a 400 naming it. No schema can say more.
- An autoscaling policy's scale-down thresholds must be below its scale-up ones: a rule between the values of two
  fields, which JSON Schema cannot state (the document says it in words), so a policy breaking only that rule is
  refused with a 400 naming `autoscaling.scale_down.<signal>`.
- schemathesis 4.32.5's coverage phase only writes header values of letters and digits: for a header whose pattern
  needs another character (`If-Match` is a quoted entity tag) it sends a placeholder such as `If-Match: 0`, which
  the document refuses, in cases it calls positive. Such a request is not valid data, whatever it is called.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import schemathesis
from schemathesis.openapi.checks import RejectedPositiveData

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the CLI loads this file from anywhere

from chalicelib.shapes import HEADER_PATTERNS  # noqa: E402

UNSTATABLE_FIELDS = {"cursor", "autoscaling.scale_down.cpu_percent", "autoscaling.scale_down.connections_percent"}


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Keep every failure but a positive-data one whose request broke a documented header pattern, or whose
    400 names only fields whose rule no schema can state."""
    if not isinstance(failure, RejectedPositiveData):
        return True
    sent = response.request.headers
    if any(name in sent and not re.fullmatch(pattern, sent[name]) for name, pattern in HEADER_PATTERNS.items()):
        return False
    if response.status_code != 400:
        return True
    try:
        details = response.json()["error"]["details"]
    except (ValueError, KeyError, TypeError):
        return True
    return not (details and all(d.get("field") in UNSTATABLE_FIELDS for d in details))
