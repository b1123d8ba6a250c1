"""Bounded hand-off between the decode thread and the consumer: block when full, or drop the oldest."""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Closed(Exception):
    """get() on a closed buffer that has nothing left."""


class BoundedBuffer(Generic[T]):
    """A FIFO of at most `capacity` items, safe between threads.

    put(item, timeout) waits for room (files: the decoder waits for the consumer) and returns False on
    timeout; put_drop_oldest(item) never waits and returns the items it pushed out (live sources:
    the consumer always gets the newest). close() wakes everyone; get() then drains what is left and
    raises Closed.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item: T, timeout: float | None = None) -> bool:
        with self._cond:
            if not self._cond.wait_for(lambda: self._closed or len(self._items) < self.capacity, timeout):
                return False
            if not self._closed:
                self._items.append(item)
                self._cond.notify_all()
            return True

    def put_drop_oldest(self, item: T) -> list[T]:
        with self._cond:
            dropped = []
            while len(self._items) >= self.capacity:
                dropped.append(self._items.popleft())
            if not self._closed:
                self._items.append(item)
                self._cond.notify_all()
            return dropped

    def get(self, timeout: float | None = None) -> T | None:
        """The oldest item; None if `timeout` passes first; Closed once closed and empty."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._closed or self._items, timeout):
                return None
            if self._items:
                item = self._items.popleft()
                self._cond.notify_all()
                return item
            raise Closed

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
