"""PatchStream's state machine on scripted sources: backoff with a cap, giving up, the watchdog, callbacks."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from longwatch.ingest.clock import LiveClock
from longwatch.ingest.config import IngestConfig
from longwatch.ingest.errors import IngestError
from longwatch.ingest.sources import Source
from longwatch.ingest.stream import WATCHDOG_GRACE_S, PatchStream

FRAME = np.zeros((48, 64, 3), np.uint8)


class Scripted(Source):
    """A live source; each connection plays the next step: ("frames", n) | ("error", msg) | ("block",)."""

    live = reconnects = watchdog = True
    name = "scripted://cam"

    def __init__(self, *steps) -> None:
        self.steps = list(steps)
        self.clock = LiveClock()
        self.unblock = threading.Event()

    def read(self, select):
        step = self.steps.pop(0) if self.steps else ("error", "down")
        self.clock.new_connection()
        if step[0] == "error":
            raise IngestError(f"{self.name}: {step[1]}", code="unreachable")
        if step[0] == "block":  # a decoder call that never returns (the PyAV timeout caveat)
            self.unblock.wait(60)
            return
        for i in range(step[1]):  # a 100 fps camera whose pts restart at 0 on every connection
            t = self.clock.stamp(i / 100)
            if select(t):
                yield FRAME, t
            time.sleep(0.01)


def cfg(**kw) -> IngestConfig:
    base = dict(fps=50.0, frame_size="64", reconnect_initial_s=0.05, reconnect_max_s=0.1,
                open_timeout_s=0.2, read_timeout_s=0.2)
    return IngestConfig(**{**base, **kw})


def drain(stream: PatchStream):
    out = []
    with pytest.raises(IngestError) as e:
        for p in stream:
            out.append(p)
    return out, e.value


def test_backoff_doubles_up_to_the_cap_then_gives_up():
    states = []
    stream = PatchStream(Scripted(("frames", 10)), cfg(reconnect_attempts=3), on_state=states.append)
    with stream:
        out, err = drain(stream)
    assert len(out) >= 2 and err.code == "gave_up" and "3 reconnect attempts" in str(err)
    retries = [s for s in states if s.state == "reconnecting"]
    assert [s.attempt for s in retries] == [1, 2, 3]
    assert [s.next_retry_s for s in retries] == [0.05, 0.1, 0.1]  # 0.05 * 2^k, capped at 0.1
    assert retries[1].reason == "scripted://cam: down"
    assert [s.state for s in states][:2] == ["connecting", "streaming"] and states[-1].state == "failed"


def test_a_source_that_never_worked_fails_without_retrying():
    states = []
    with PatchStream(Scripted(("error", "connection refused")), cfg(), on_state=states.append) as stream:
        out, err = drain(stream)
    assert out == [] and err.code == "unreachable"
    assert [s.state for s in states] == ["connecting", "failed"]


def test_attempts_reset_once_frames_flow_again_and_the_gap_is_recorded():
    states = []
    src = Scripted(("frames", 10), ("error", "down"), ("frames", 10), ("error", "down"), ("error", "down"))
    with PatchStream(src, cfg(reconnect_attempts=2), on_state=states.append) as stream:
        out, err = drain(stream)
    assert [s.attempt for s in states if s.state == "reconnecting"] == [1, 2, 1, 2]
    times = [t for p in out for t in p.pts]
    assert times == sorted(times)
    gapped = [p for p in out if p.gap_before > 0]
    assert len(gapped) == 1 and gapped[0].gap_before >= 0.05  # the retry delay at least


def test_watchdog_abandons_a_blocked_read_and_reconnects():
    states = []
    src = Scripted(("frames", 10), ("block",), ("frames", 10))
    c = cfg()
    t0 = time.monotonic()
    with PatchStream(src, c, on_state=states.append) as stream:
        out = [stream.get(timeout=10) for _ in range(4)]
        elapsed = time.monotonic() - t0
    src.unblock.set()
    assert all(p is not None for p in out)
    reasons = [s.reason for s in states if s.state == "reconnecting"]
    assert any("could not open within" in r for r in reasons)
    assert elapsed < c.open_timeout_s + WATCHDOG_GRACE_S + 3


def test_a_crashing_listener_does_not_stop_ingest():
    def bad(_state):
        raise RuntimeError("listener bug")

    seen = []
    stream = PatchStream(Scripted(("frames", 10)), cfg(reconnect_attempts=1), on_state=bad)
    stream.add_listener(seen.append)
    with stream:
        out, err = drain(stream)
    assert out and seen[-1].state == "failed"


def test_stats_count_patches_and_fps():
    with PatchStream(Scripted(("frames", 20)), cfg(reconnect_attempts=1)) as stream:
        out, _ = drain(stream)
        stats = stream.stats()
    assert stats.patches == len(out) and stats.frames_seen == 20 and stats.frames_sampled >= 2 * len(out)
    assert stats.fps_in > 0 and stats.reconnects == 1 and stats.dropped_frames == 0
