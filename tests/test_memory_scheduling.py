"""Streams share the model forward by forward: the fair model lock, answers decoded on a copy, batched live ingest."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from longwatch.backbone.model import Sampling
from longwatch.backbone.model import FairRLock
from longwatch.ingest.patches import TemporalPatch
from longwatch.memory.config import MemoryConfig
from longwatch.memory.multistream import BatchEncoder
from longwatch.memory.schema import ConfigError
from longwatch.memory.stream import MemoryStream

MB = 2**20


def _patches(seed: int, n: int, t0: float = 0.0) -> list[TemporalPatch]:
    rng = np.random.default_rng(seed)
    return [TemporalPatch(i, rng.integers(0, 256, (2, 64, 96, 3), dtype=np.uint8),
                          (t0 + i, t0 + i + 0.5), t0 + i, t0 + i + 1) for i in range(n)]


def _cfg(**kw) -> MemoryConfig:
    base = dict(policy="rekv", window_blocks=2, retrieve_blocks=2, device_budget=64 * MB, answer_tokens=64)
    return MemoryConfig(**{**base, **kw})


def _in_thread(fn, timeout: float = 10.0):
    """fn() on another thread (a stream's lock is re-entrant for the thread holding it); its result."""
    out: list = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join(timeout)
    assert out, "the other thread did not finish"
    return out[0]


# ---- the model lock -------------------------------------------------------------------------------


def test_a_waiter_gets_the_model_lock_between_two_steps_of_a_decoding_loop():
    """A thread that takes the lock per step in a loop (decoding) lets a waiting thread in at the next
    step; threading.RLock lets the looping thread win it back again and again."""
    lock, steps, waited = FairRLock(), [], []
    stop = threading.Event()

    def decoding() -> None:
        while not stop.is_set():
            with lock:
                steps.append(1)
                time.sleep(0.002)

    t = threading.Thread(target=decoding)
    t.start()
    time.sleep(0.02)
    for _ in range(10):
        before = len(steps)
        with lock:
            waited.append(len(steps) - before)
        time.sleep(0.003)
    stop.set()
    t.join()
    assert max(waited) <= 1, waited


def test_the_model_lock_is_reentrant_times_out_and_belongs_to_its_holder():
    lock = FairRLock()
    errors: list[Exception] = []

    def release_it() -> bool:
        try:
            lock.release()
        except RuntimeError as e:
            errors.append(e)
        return True

    with lock, lock:  # re-entered by its holder
        assert _in_thread(lambda: lock.acquire(timeout=0.05)) is False
        assert lock.waiting() == 0  # the waiter that timed out left the queue
        _in_thread(release_it)
        assert errors and "another thread" in str(errors[0])
    assert _in_thread(lambda: lock.acquire(blocking=False) and (lock.release() or True)) is True


# ---- answers ----------------------------------------------------------------------------------------


def _probe_free(ms: MemoryStream, seen: list[bool]):
    """An on_text callback recording, at the first token, whether another thread can take the stream."""
    def on_text(_text: str) -> None:
        if not seen:
            seen.append(_in_thread(lambda: ms.lock.acquire(timeout=0.2) and (ms.lock.release() or True)))
    return on_text


def test_an_answer_on_a_copy_frees_its_stream_and_equals_the_answer_in_place(tiny):
    ms = MemoryStream(tiny, _cfg())
    for p in _patches(1, 6):
        ms.ingest(p)
    length, samp = ms.cache.length, Sampling(max_new_tokens=6)
    on_copy, free_in_place = [], []
    a = ms.ask("What happened?", keep_logits=True, sampling=samp, on_text=_probe_free(ms, free_in_place), copy_limit=0)
    b = ms.ask("What happened?", keep_logits=True, sampling=samp, on_text=_probe_free(ms, on_copy))  # memory.answer_copy_budget
    assert free_in_place == [False] and on_copy == [True]
    assert a.copied_bytes == 0 and b.copied_bytes > 0
    assert a.token_ids == b.token_ids and len(a.logits) == len(b.logits)
    assert max((x - y).abs().max().item() for x, y in zip(a.logits, b.logits)) < 1e-5
    assert [e.block_id for e in a.evidence] == [e.block_id for e in b.evidence]
    assert ms.cache.length == length  # the question and the answer left no trace in either case


def test_a_copy_too_large_for_the_limit_decodes_in_place(tiny):
    ms = MemoryStream(tiny, _cfg())
    for p in _patches(1, 3):
        ms.ingest(p)
    seen: list[bool] = []
    r = ms.ask("What happened?", sampling=Sampling(max_new_tokens=3), on_text=_probe_free(ms, seen), copy_limit=1000)
    assert r.copied_bytes == 0 and seen == [False]


def test_the_stream_goes_on_ingesting_while_its_answer_decodes_on_a_copy(tiny):
    """Patches arriving during the answer go into memory at once; the answer is the one the memory
    gave when the question came."""
    feed = _patches(2, 8)
    ms = MemoryStream(tiny, _cfg())
    for p in feed[:5]:
        ms.ingest(p)
    samp = Sampling(max_new_tokens=6)
    reference = ms.ask("What happened?", keep_logits=True, sampling=samp)
    during: list[int] = []

    def on_text(_text: str) -> None:
        if not during:
            during.append(_in_thread(lambda: [ms.ingest(p) for p in feed[5:]] and ms.stats()["patches"]))

    r = ms.ask("What happened?", keep_logits=True, sampling=samp, on_text=on_text, copy_limit=64 * MB)
    assert during, "the answer produced no text to hook"
    assert r.token_ids == reference.token_ids
    assert max((x - y).abs().max().item() for x, y in zip(r.logits, reference.logits)) < 1e-5
    assert max(b.t_end for b in ms.blocks.values()) == feed[-1].t_end
    after = ms.ask("What happened?", sampling=Sampling(max_new_tokens=1))
    assert max(e.t_end for e in after.evidence) == feed[-1].t_end


def test_other_streams_encode_between_the_decode_steps_of_an_answer_in_place(tiny):
    """A long answer on one stream does not hold the model for the whole answer: another stream's patch
    is encoded while it is still decoding."""
    a, b = MemoryStream(tiny, _cfg(), stream_id="a"), MemoryStream(tiny, _cfg(), stream_id="b")
    for p in _patches(1, 3):
        a.ingest(p)
        b.ingest(p)
    b_done = threading.Event()
    tokens_when_done: list[int] = []
    count = [0]

    def feed_b() -> None:
        b.ingest(_patches(3, 4)[3])
        tokens_when_done.append(count[0])
        b_done.set()

    def on_text(_text: str) -> None:
        count[0] += 1
        if count[0] == 1:
            threading.Thread(target=feed_b).start()
        if count[0] == 2:
            b_done.wait(10.0)  # with the model held for the whole answer this waits in vain

    r = a.ask("What happened?", sampling=Sampling(max_new_tokens=12), on_text=on_text, copy_limit=0)
    assert b_done.wait(10.0)
    assert len(r.token_ids) == 12 and tokens_when_done and tokens_when_done[0] < 12


# ---- the batch encoder ------------------------------------------------------------------------------


def test_live_streams_are_encoded_together_and_equal_one_by_one(tiny):
    feeds = [_patches(1, 4), _patches(2, 4, t0=95.0), _patches(3, 4, t0=990.0)]
    solo = [MemoryStream(tiny, _cfg(), stream_id=f"solo{i}") for i in range(3)]
    live = [MemoryStream(tiny, _cfg(), stream_id=f"live{i}") for i in range(3)]
    for s, feed in zip(solo, feeds):
        for p in feed:
            s.ingest(p)
    enc = BatchEncoder()
    try:
        for s in live:  # held: every stream's first patch waits, so the first step takes all three
            s.lock.acquire()
        threads = [threading.Thread(target=lambda s=s, f=f: [enc.submit(s, p) for p in f]) for s, f in zip(live, feeds)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while enc.waiting() < 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert enc.waiting() == 3
        for s in live:
            s.lock.release()
        for t in threads:
            t.join(20)
        assert enc.patches == 12 and enc.largest == 3 and enc.steps < 12
    finally:
        enc.close()
    samp = Sampling(max_new_tokens=2)
    for x, y in zip(solo, live):
        assert x.cache.length == y.cache.length
        rx, ry = (s.ask("What happened?", keep_logits=True, sampling=samp) for s in (x, y))
        assert (rx.logits[0] - ry.logits[0]).abs().max().item() < 1e-4


def test_a_stream_that_fails_in_a_batched_step_fails_alone(tiny):
    good = MemoryStream(tiny, _cfg(), stream_id="good")
    bad = MemoryStream(tiny, _cfg(device_budget=4096), stream_id="bad")  # cannot hold one patch
    enc = BatchEncoder()
    results: dict[str, object] = {}

    def run(name: str, s: MemoryStream) -> None:
        try:
            results[name] = enc.submit(s, _patches(1, 1)[0])
        except Exception as e:
            results[name] = e

    try:
        good.lock.acquire()
        bad.lock.acquire()
        threads = [threading.Thread(target=run, args=a) for a in (("good", good), ("bad", bad))]
        for t in threads:
            t.start()
        while enc.waiting() < 2:
            time.sleep(0.005)
        good.lock.release()
        bad.lock.release()
        for t in threads:
            t.join(20)
    finally:
        enc.close()
    assert enc.largest == 2
    assert isinstance(results["bad"], ConfigError)
    assert not isinstance(results["good"], Exception) and good.stats()["patches"] == 1


def test_a_stream_held_by_an_answer_waits_and_the_others_go_on(tiny):
    held, free = MemoryStream(tiny, _cfg(), stream_id="held"), MemoryStream(tiny, _cfg(), stream_id="free")
    enc = BatchEncoder()
    done = threading.Event()
    try:
        held.lock.acquire()  # as an answer decoding in place holds it
        t = threading.Thread(target=lambda: (enc.submit(held, _patches(1, 1)[0]), done.set()))
        t.start()
        for p in _patches(2, 3):
            enc.submit(free, p)  # not blocked behind the held stream
        assert not done.is_set() and enc.waiting() == 1
        held.lock.release()
        assert done.wait(10)
    finally:
        enc.close()
    assert free.cache.length > 0 and held.cache.length > 0
