"""Stream one answer token by token: MemoryStream.ask runs on a thread, the page gets text as it grows."""

from __future__ import annotations

import logging
import queue
import threading
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


def stream_answer(ask: Ask, poll_s: float = 0.05) -> Iterator[AnswerUpdate]:
    """Run `ask` on a thread and yield the growing text, then one final update.

    Tokens that arrive together are coalesced into one update, so a fast model does not flood the
    page with one event per token. Closing the generator early (the page went away) asks the model
    to stop at its next token.
    """
    chunks: queue.Queue[str] = queue.Queue()
    done = threading.Event()
    cancelled = threading.Event()
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["answer"] = ask(chunks.put, cancelled.is_set)
        except Exception as e:  # reported to the page as a message; the server goes on
            if not isinstance(e, ValueError):
                log.exception("answer failed")
            result["error"] = friendly_error(e)
        finally:
            done.set()

    thread = threading.Thread(target=run, name="ui-answer", daemon=True)
    thread.start()
    text = ""
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
            if grown:
                yield AnswerUpdate(text)
            done.wait(poll_s)
        answer = result.get("answer")
        if answer is not None and answer.text:
            text = answer.text  # the decoder's final text (detokenised whole) wins over the joined pieces
        yield AnswerUpdate(text, answer=answer, error=result.get("error"))
    finally:
        cancelled.set()
