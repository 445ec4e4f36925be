"""Keeps received job messages hidden while they are worked on, however long the work takes."""

from __future__ import annotations

import logging
import threading

from orochi_agent.clients.queue import Message, Queue, QueueError
from orochi_agent.telemetry import Telemetry

log = logging.getLogger("orochi_agent.leases")


class Leases:
    """Every third of the visibility timeout, pushes the visibility of the held messages a whole timeout out.

    A message is dropped from here before it is deleted or handed back, under the same lock as an
    extension, so an extension can never hide a message again once it was handed back.
    """

    def __init__(self, *, queue: Queue, telemetry: Telemetry, stop: threading.Event) -> None:
        self._queue, self._telemetry, self._stop = queue, telemetry, stop
        self._held: dict[str, Message] = {}
        self._lock = threading.Lock()

    def hold(self, messages: list[Message]) -> None:
        with self._lock:
            self._held.update((m.id, m) for m in messages)

    def drop(self, messages: list[Message]) -> list[Message]:
        """Stop holding `messages`; those that were still held (the others were handed back meanwhile)."""
        with self._lock:
            return [m for m in messages if self._held.pop(m.id, None) is not None]

    def release(self, messages: list[Message], *, after: float) -> None:
        """Stop holding `messages` and hand them back: visible again after `after` seconds."""
        held = self.drop(messages)
        if not held:
            return
        try:
            self._queue.release(held, after=after)
        except QueueError as e:
            log.warning("could not hand back %d job message(s); they return when their lease ends: %s",
                        len(messages), e)

    def held(self) -> list[Message]:
        with self._lock:
            return list(self._held.values())

    def run(self) -> None:
        interval = max(1.0, self._queue.visibility_timeout / 3)
        while not self._stop.wait(interval):
            self.extend()

    def extend(self) -> None:
        with self._lock:
            held = list(self._held.values())
            if not held:
                return
            try:
                self._queue.extend(held, self._queue.visibility_timeout)
                self._telemetry.lease_extensions.inc(len(held))
            except QueueError as e:
                log.warning("could not extend %d job message(s): %s", len(held), e)
