"""Several clusters at once, each cluster's work in order: one worker at a time per cluster."""

from __future__ import annotations

import logging
import threading
import queue
from collections.abc import Callable

from orochi_agent.clients.queue import Message

log = logging.getLogger("orochi_agent.dispatch")


class Dispatcher:
    """Runs `handle(cluster_id, messages)` on `workers` threads. Work submitted for a cluster that is being handled
    waits and is then handled once with everything that arrived meanwhile (a job is a hint: the latest state wins).

    The threads are daemons: work still running when the agent exits is abandoned (its jobs were handed back),
    never waited for.
    """

    def __init__(self, *, workers: int, handle: Callable[[str, list[Message]], None]) -> None:
        self._handle = handle
        self._ready: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._workers = workers
        for index in range(workers):
            threading.Thread(target=self._work, name=f"reconcile-{index}", daemon=True).start()
        self._changed = threading.Condition()
        self._waiting: dict[str, list[Message]] = {}
        self._running: dict[str, list[Message]] = {}
        self._scheduled: set[str] = set()
        self._closed = False

    def submit(self, cluster_id: str, messages: list[Message]) -> bool:
        """Queue work for the cluster (no messages: a resync's reconcile). False once closed."""
        with self._changed:
            if self._closed:
                return False
            self._waiting.setdefault(cluster_id, []).extend(messages)
            if cluster_id not in self._scheduled:
                self._scheduled.add(cluster_id)
                self._ready.put(cluster_id)
            return True

    def busy(self) -> int:
        """How many clusters have work queued or under way."""
        with self._changed:
            return len(self._scheduled)

    def wait_for_room(self, limit: int, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(self._scheduled) < limit, timeout)

    def close(self, timeout: float) -> list[Message]:
        """Take no more work; wait up to `timeout` for work under way. Returns every message not done by then."""
        with self._changed:
            self._closed = True
            unstarted = [m for messages in self._waiting.values() for m in messages]
            self._waiting.clear()
            for _ in range(self._workers):
                self._ready.put(None)  # each worker ends once it is done with what it has in hand
            self._changed.wait_for(lambda: not self._running, timeout)
            return unstarted + [m for messages in self._running.values() for m in messages]

    def _work(self) -> None:
        while (cluster_id := self._ready.get()) is not None:
            self._run(cluster_id)

    def _run(self, cluster_id: str) -> None:
        while True:
            with self._changed:
                messages = self._waiting.pop(cluster_id, None)
                if messages is None or self._closed:
                    self._scheduled.discard(cluster_id)
                    self._changed.notify_all()
                    return
                self._running[cluster_id] = messages
            try:
                self._handle(cluster_id, messages)
            except Exception:
                log.exception("reconcile of %s failed unexpectedly", cluster_id)
            finally:
                with self._changed:
                    self._running.pop(cluster_id, None)
                    self._changed.notify_all()
