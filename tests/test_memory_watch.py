"""Watches: the firing rule on made-up scores, and yes/no scoring on the tiny model (bounded, side-effect free)."""

from __future__ import annotations

import numpy as np
import pytest

from longwatch.backbone.model import Sampling
from longwatch.ingest.patches import TemporalPatch
from longwatch.memory.config import MemoryConfig
from longwatch.memory.engine import Evidence, YesNo
from longwatch.memory.stream import MemoryStream
from longwatch.memory.watch import Watch


def _score(t: float, p: float) -> YesNo:
    return YesNo(p, 0.0, 0.0, t, Evidence(int(t), t - 1, t, "window"))


def test_a_watch_fires_when_the_answer_turns_yes_and_rearms_after_no():
    w = Watch("Is a red square on screen?", interval_s=1.0, threshold=0.5, hysteresis=0.2)
    ps = [0.1, 0.2, 0.7, 0.9, 0.45, 0.6, 0.1, 0.8]  # 0.45 is inside the hysteresis band: no re-arm
    fired = [w.observe(_score(t, p)) for t, p in enumerate(ps, start=1)]
    assert [f.t for f in fired if f] == [3, 8]
    assert fired[2].evidence.t_end == 3 and w.fired == 2 and w.checks == len(ps)


def test_a_watch_checks_at_most_once_per_interval():
    w = Watch("Is it dark?", interval_s=5.0)
    w.observe(_score(10.0, 0.1))
    assert not w.due(12.0) and not w.due(14.9) and w.due(15.0)


@pytest.mark.parametrize("bad", [dict(condition=" "), dict(interval_s=0), dict(threshold=1.0),
                                 dict(threshold=0.5, hysteresis=0.5)])
def test_bad_watch_settings_are_named(bad):
    kw = dict(condition="Is a red square on screen?") | bad
    with pytest.raises(ValueError, match="watch"):
        Watch(**kw)


def test_yes_no_is_one_bounded_forward_that_leaves_the_stream_as_it_was(tiny):
    rng = np.random.default_rng(0)
    ms = MemoryStream(tiny, MemoryConfig(policy="sliding", window_blocks=2, device_budget=64 * 2**20, answer_tokens=64))
    with pytest.raises(ValueError, match="no video"):
        ms.yes_no("Is a red square on screen?")
    for i in range(6):
        ms.ingest(TemporalPatch(i, rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8), (i, i + 0.5), i, i + 1.0))
    before = ms.ask("What now?", keep_logits=True, sampling=Sampling(max_new_tokens=2))
    length = ms.cache.length
    s = ms.yes_no("Is a red square on screen?")
    assert 0.0 <= s.p_yes <= 1.0 and s.t == 6.0 and s.evidence.t_start == 5.0
    assert ms.cache.length == length  # transient: nothing of the question stays
    after = ms.ask("What now?", keep_logits=True, sampling=Sampling(max_new_tokens=2))
    assert (before.logits[0] - after.logits[0]).abs().max().item() < 1e-5
    w = Watch("Is a red square on screen?", interval_s=1.0, threshold=0.01, hysteresis=0.0)
    assert w.check(ms) is not None and w.check(ms) is None  # fired once; not due again until the stream moves


def test_a_question_is_checked_before_any_model_call(tiny):
    ms = MemoryStream(tiny, MemoryConfig(policy="sliding", window_blocks=2, device_budget=64 * 2**20, answer_tokens=64))
    with pytest.raises(ValueError, match="no video"):
        ms.check_question("What now?")
    rng = np.random.default_rng(1)
    for i in range(3):
        ms.ingest(TemporalPatch(i, rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8), (i, i + 0.5), i, i + 1.0))
    ms.check_question("What now?", until=1.5)
    with pytest.raises(ValueError, match="empty question"):
        ms.check_question("  ")
    with pytest.raises(ValueError, match="answer reserve"):
        ms.check_question("why " * 40)
    with pytest.raises(ValueError, match="until=0 s is before the first patch"):
        ms.check_question("What now?", until=0.0)
    assert ms.ask("What now?", until=0.0, sampling=Sampling(max_new_tokens=1)).evidence == []  # nothing played yet
