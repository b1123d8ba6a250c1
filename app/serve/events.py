"""A bus of events per stream: published from ingest threads, read by any number of SSE clients.

Event types: `connecting`, `streaming`, `reconnecting`, `ended`, `failed` (the source's states, with
attempt, next_retry_s and reason), `gap` (stream time lost before a patch: t_start, gap_s), `restored`
(a restarted server reopened the stream's journal: patches, encoded_up_to), and, for
the watch manager to publish, `watch` (a watch fired). Every event has an increasing id, so a client
that reconnects with Last-Event-ID gets what it missed (from the last HISTORY events). After a terminal
event (ended, failed) the bus closes: subscribers get it, then their iteration ends.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

HISTORY = 256
"""Events kept per stream for late subscribers."""
QUEUE = 1024
"""Events held per subscriber that reads slower than they come; beyond, the oldest are dropped."""
TERMINAL = ("ended", "failed")


@dataclass(frozen=True)
class Event:
    id: int
    type: str
    stream_id: str
    at: float
    """Unix time of publishing."""
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "stream_id": self.stream_id, "at": round(self.at, 3), **self.data}


class Subscription:
    """One reader of a bus, on one event loop; iterate it with `async for`."""

    def __init__(self, bus: EventBus, loop: asyncio.AbstractEventLoop, backlog: list[Event], closed: bool) -> None:
        self.bus, self.loop = bus, loop
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue()
        for event in backlog:
            self.queue.put_nowait(event)
        if closed:
            self.queue.put_nowait(None)

    def deliver(self, event: Event | None) -> None:
        """Hand `event` (None: the bus closed) to the subscriber's loop; any thread."""
        try:
            self.loop.call_soon_threadsafe(self._put, event)
        except RuntimeError:  # the loop is gone: nobody is reading any more
            self.bus.unsubscribe(self)

    def _put(self, event: Event | None) -> None:
        while self.queue.qsize() >= QUEUE:
            self.queue.get_nowait()
        self.queue.put_nowait(event)

    async def next(self, timeout: float) -> Event | None:
        """The next event; TimeoutError after `timeout` seconds without one; None once the bus closed."""
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def __aiter__(self) -> AsyncIterator[Event]:
        while (event := await self.queue.get()) is not None:
            yield event

    def close(self) -> None:
        self.bus.unsubscribe(self)


class EventBus:
    """Thread-safe publish; asyncio subscribers. The stream resource decides when to close it."""

    def __init__(self, stream_id: str, history: int = HISTORY) -> None:
        self.stream_id = stream_id
        self._ids = itertools.count(1)
        self._history: deque[Event] = deque(maxlen=history)
        self._subscribers: list[Subscription] = []
        self._closed = False
        self._lock = threading.Lock()

    def publish(self, type: str, **data: Any) -> Event | None:
        """Record and fan out an event; None (nothing sent) once the bus is closed."""
        with self._lock:
            if self._closed:
                return None
            event = Event(next(self._ids), type, self.stream_id, time.time(), data)
            self._history.append(event)
            subscribers = list(self._subscribers)
        for sub in subscribers:
            sub.deliver(event)
        return event

    def close(self) -> None:
        """No more events; subscribers finish after what they already have."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            subscribers, self._subscribers = self._subscribers, []
        for sub in subscribers:
            sub.deliver(None)

    @property
    def closed(self) -> bool:
        with self._lock:
            return self._closed

    def history(self) -> list[Event]:
        with self._lock:
            return list(self._history)

    def subscribe(self, after: int = 0) -> Subscription:
        """A subscription on the running loop that first replays the kept events with an id above `after`."""
        loop = asyncio.get_running_loop()
        with self._lock:
            backlog = [e for e in self._history if e.id > after]
            sub = Subscription(self, loop, backlog, self._closed)
            if not self._closed:
                self._subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)
