"""Stream one answer token by token: MemoryStream.ask runs on a thread, the page gets text as it grows; Stop ends it."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

Ask = Callable[[Callable[[str], None], Callable[[], bool]], Any]
"""ask(on_text, should_stop) -> memory.stream.Answer"""


@dataclass(frozen=True)
class AnswerUpdate:
    text: str
    """The answer so far."""
    answer: Any = None
    """The final memory.stream.Answer, on the last update only."""
    error: str | None = None
    """A message for the page instead of an answer (the last update)."""
    stopped: bool = False
    """The user stopped the answer before it ended (the last update): `text` is what came until then."""


def friendly_error(e: BaseException) -> str:
    """One line for the page; no traceback ever reaches the browser."""
    if isinstance(e, ValueError):
        msg = str(e)
        if "no video has been ingested" in msg:
            return "Nothing is in memory yet: wait for the first second of video to be encoded, then ask again."
        if msg == "empty question":
            return "Type a question first."
        return msg[:1].upper() + msg[1:]
    return f"Model failure while answering: {type(e).__name__}: {e}"


def stream_answer(ask: Ask, poll_s: float = 0.05, stop: threading.Event | None = None,
                  stop_wait_s: float = 1.0) -> Iterator[AnswerUpdate]:
    """Run `ask` on a thread and yield the growing text, then one final update.

    Tokens that arrive together are coalesced into one update, so a fast model does not flood the
    page with one event per token. Closing the generator early (the page went away) or setting
    `stop` (the Stop button) makes `ask`'s should_stop true: the model stops after its current token
    and gives the model lock back. After `stop`, the final update comes when `ask` returns, or after
    `stop_wait_s` if it is still busy (waiting for the model, prefilling: it stops at its first token).
    """
    chunks: queue.Queue[str] = queue.Queue()
    done = threading.Event()
    cancelled = threading.Event()
    result: dict[str, Any] = {}

    def should_stop() -> bool:
        return cancelled.is_set() or (stop is not None and stop.is_set())

    def run() -> None:
        try:
            result["answer"] = ask(chunks.put, should_stop)
        except Exception as e:  # reported to the page as a message; the server goes on
            if not isinstance(e, ValueError):
                log.exception("answer failed")
            result["error"] = friendly_error(e)
        finally:
            done.set()

    thread = threading.Thread(target=run, name="ui-answer", daemon=True)
    thread.start()
    text = ""
    stop_seen: float | None = None
    try:
        while True:
            finished = done.is_set()
            grown = False
            while True:
                try:
                    text += chunks.get_nowait()
                    grown = True
                except queue.Empty:
                    break
            if finished:
                break
            if stop is not None and stop.is_set():
                stop_seen = time.monotonic() if stop_seen is None else stop_seen
                if time.monotonic() - stop_seen >= stop_wait_s:
                    break  # the page moves on; the thread ends at its model's first token
            if grown:
                yield AnswerUpdate(text)
            done.wait(poll_s)
        answer = result.get("answer") if finished else None
        if answer is not None and answer.text:
            text = answer.text  # the decoder's final text (detokenised whole) wins over the joined pieces
        # an answer that met its end-of-turn token was not cut short, even if Stop came just after
        error = result.get("error")
        stopped = (stop is not None and stop.is_set() and error is None
                   and not (answer is not None and answer.stopped))
        yield AnswerUpdate(text, answer=answer, error=error, stopped=stopped)
    finally:
        cancelled.set()


class AnswerRuns:
    """Stop flags by Gradio session hash: the tab's current flag, shared by the answers it streams or has queued.

    arm() when Stop appears (after a stop, the next question gets a fresh flag), start()/end() around each
    answer, stop() for the Stop button: it reaches an answer still waiting in Gradio's queue too, which then
    ends without asking the model. A flag is dropped when its last answer ends, or when the tab closes.
    """

    def __init__(self) -> None:
        self._flags: dict[str, threading.Event] = {}
        self._users: dict[threading.Event, int] = {}
        self._lock = threading.Lock()

    def arm(self, key: str) -> None:
        with self._lock:
            flag = self._flags.get(key)
            if flag is None or flag.is_set():
                self._flags[key] = threading.Event()

    def start(self, key: str) -> threading.Event:
        """The flag one answer of session `key` stops on (set already if Stop came while it was queued)."""
        with self._lock:
            flag = self._flags.setdefault(key, threading.Event())
            self._users[flag] = self._users.get(flag, 0) + 1
            return flag

    def end(self, key: str, flag: threading.Event) -> None:
        with self._lock:
            left = self._users.pop(flag, 1) - 1
            if left > 0:
                self._users[flag] = left
            elif self._flags.get(key) is flag:
                del self._flags[key]

    def stop(self, key: str) -> bool:
        """Stop session `key`'s answers (running or queued); False when it has none."""
        with self._lock:
            flag = self._flags.get(key)
        if flag is not None:
            flag.set()
        return flag is not None

    def forget(self, key: str) -> None:
        """The tab closed."""
        with self._lock:
            self._flags.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._flags)
