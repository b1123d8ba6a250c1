"""Answers stream to the page as they grow; failures become one-line messages, never tracebacks."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from longwatch.app.ui.answer import AnswerRuns, stream_answer


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


def test_stop_makes_should_stop_true_and_keeps_the_partial_text():
    stop = threading.Event()
    saw = threading.Event()

    def ask(on_text, should_stop):
        n = 0
        while not should_stop() and n < 500:  # a long answer
            on_text(f"w{n} ")
            n += 1
            time.sleep(0.005)
        saw.set()
        return SimpleNamespace(text="", evidence=[], stopped=False)

    updates = []
    for up in stream_answer(ask, poll_s=0.01, stop=stop):
        updates.append(up)
        if len(updates) == 2:
            stop.set()  # the Stop button
    assert saw.is_set()  # the model loop itself was told to stop, not only the page
    last = updates[-1]
    assert last.stopped and last.answer is not None and last.error is None
    assert last.text.startswith("w0 w1") and "w499" not in last.text


def test_stop_while_the_model_is_busy_ends_the_page_answer_and_the_model_stops_at_its_first_token():
    stop, release, seen = threading.Event(), threading.Event(), []

    def ask(on_text, should_stop):
        release.wait(5)  # waiting for the model lock, or a long prefill
        on_text("late")
        seen.append(should_stop())
        return SimpleNamespace(text="late", evidence=[], stopped=False)

    stop.set()
    t0 = time.monotonic()
    last = list(stream_answer(ask, poll_s=0.01, stop=stop, stop_wait_s=0.1))[-1]
    assert time.monotonic() - t0 < 2 and last.stopped and last.answer is None and last.text == ""
    release.set()
    deadline = time.monotonic() + 2
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == [True]


def test_an_answer_that_reached_its_end_of_turn_is_not_marked_stopped():
    stop = threading.Event()

    def ask(on_text, should_stop):
        on_text("Done.")
        stop.set()  # Stop clicked as the last token came
        return SimpleNamespace(text="Done.", evidence=[], stopped=True)

    last = list(stream_answer(ask, poll_s=0.01, stop=stop))[-1]
    assert not last.stopped and last.text == "Done."


def test_a_stop_reaches_its_own_tab_only_and_a_queued_answer_too():
    runs = AnswerRuns()
    runs.arm("a")
    assert runs.stop("a")  # clicked while the question still waits in the queue
    queued = runs.start("a")
    assert queued.is_set()
    runs.end("a", queued)
    assert len(runs) == 0 and not runs.stop("a")  # nothing streams: a stray click stops nothing later
    runs.arm("a")
    mine, other = runs.start("a"), runs.start("b")
    assert not mine.is_set()  # the next question starts afresh
    runs.stop("b")
    assert other.is_set() and not mine.is_set()
    runs.end("a", mine)
    runs.end("b", other)
    assert len(runs) == 0
