"""Answers stream to the page as they grow; failures become one-line messages, never tracebacks."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from longwatch.app.ui.answer import stream_answer


def test_text_grows_token_by_token_and_ends_with_the_answer():
    release = [threading.Event() for _ in range(3)]

    def ask(on_text, should_stop):
        for i, piece in enumerate(["The", " sign", " said OPEN"]):
            on_text(piece)
            release[i].wait(5)  # one token at a time, so every step is its own update
        return SimpleNamespace(text="The sign said OPEN", evidence=[])

    updates = []
    for up in stream_answer(ask, poll_s=0.01):
        updates.append(up)
        if len(updates) <= 3:
            release[len(updates) - 1].set()
    texts = [u.text for u in updates]
    assert texts[:3] == ["The", "The sign", "The sign said OPEN"]
    assert updates[-1].answer is not None and updates[-1].error is None
    assert all(u.answer is None for u in updates[:-1])


def test_nothing_ingested_and_model_failures_are_messages():
    def empty(on_text, should_stop):
        raise ValueError("no video has been ingested yet")

    def broken(on_text, should_stop):
        on_text("par")
        raise RuntimeError("CUDA error: device-side assert triggered")

    last = list(stream_answer(empty))[-1]
    assert last.answer is None and last.error.startswith("Nothing is in memory yet")
    last = list(stream_answer(broken))[-1]
    assert last.error == "Model failure while answering: RuntimeError: CUDA error: device-side assert triggered"
    assert "Traceback" not in last.error


def test_leaving_early_asks_the_model_to_stop():
    stopped = threading.Event()

    def ask(on_text, should_stop):
        while not should_stop():
            on_text("x")
            time.sleep(0.01)
        stopped.set()
        return SimpleNamespace(text="x", evidence=[])

    gen = stream_answer(ask, poll_s=0.01)
    next(gen)
    gen.close()  # the page went away mid-answer
    assert stopped.wait(2)
