"""Batched multi-stream ingest equals ingesting each stream on its own."""

from __future__ import annotations

import numpy as np
import pytest

from longwatch.backbone.model import Sampling
from longwatch.ingest.patches import TemporalPatch
from longwatch.memory.config import MemoryConfig
from longwatch.memory.multistream import ingest_batch
from longwatch.memory.stream import MemoryStream


def _patches(seed: int, n: int, t0: float = 0.0):
    rng = np.random.default_rng(seed)
    return [TemporalPatch(i, rng.integers(0, 256, (2, 64, 96, 3), dtype=np.uint8),
                          (t0 + i, t0 + i + 0.5), t0 + i, t0 + i + 1) for i in range(n)]


@pytest.mark.parametrize("policy", ["sliding", "rekv", "full"])
def test_batched_equals_one_by_one(tiny, policy):
    cfg = MemoryConfig(policy=policy, window_blocks=3, retrieve_blocks=4, device_budget=64 * 2**20, answer_tokens=64)
    # three streams with different content, lengths and timestamps (timestamp texts of different sizes)
    feeds = [_patches(1, 8), _patches(2, 8, t0=95.0), _patches(3, 8, t0=9990.0)]
    solo = [MemoryStream(tiny, cfg, stream_id=f"solo{i}") for i in range(3)]
    together = [MemoryStream(tiny, cfg, stream_id=f"batch{i}") for i in range(3)]
    for i, feed in enumerate(feeds):
        for p in feed[: 2 * i]:  # stagger: different context lengths when batching starts
            solo[i].ingest(p)
            together[i].ingest(p)
    for step in range(4, 8):
        for i in range(3):
            solo[i].ingest(feeds[i][step])
        ingest_batch(together, [feeds[i][step] for i in range(3)])
    samp = Sampling(max_new_tokens=3)
    for a, b in zip(solo, together):
        assert a.cache.length == b.cache.length and a.next_position == b.next_position
        ra = a.ask("What happened?", keep_logits=True, sampling=samp)
        rb = b.ask("What happened?", keep_logits=True, sampling=samp)
        assert (ra.logits[0] - rb.logits[0]).abs().max().item() < 1e-4
        assert ra.token_ids == rb.token_ids
        assert [e.block_id for e in ra.evidence] == [e.block_id for e in rb.evidence]


def test_batch_rejects_mismatched_inputs(tiny):
    ms = MemoryStream(tiny, MemoryConfig(policy="sliding"))
    with pytest.raises(ValueError):
        ingest_batch([ms], [])


def test_the_batch_copy_has_its_own_budget_and_splits_to_fit(tiny):
    """The transient batch cache (a copy of every stream's live cache) stays inside its budget: with room
    for about two streams' copies, three streams take two forwards, and the result is the same."""
    cfg = MemoryConfig(policy="sliding", window_blocks=3, device_budget=64 * 2**20, answer_tokens=64)
    feeds = [_patches(i + 1, 6) for i in range(3)]
    solo = [MemoryStream(tiny, cfg, stream_id=f"solo{i}") for i in range(3)]
    together = [MemoryStream(tiny, cfg, stream_id=f"batch{i}") for i in range(3)]
    for i in range(3):
        solo[i].ingest(feeds[i][0])
        together[i].ingest(feeds[i][0])
    for step in range(1, 6):
        for i in range(3):
            solo[i].ingest(feeds[i][step])
        row = together[0].cache.length + tiny.tokens_per_patch((64, 96), float(step))  # live cache + the patch
        one = row * tiny.dims.bytes_per_token
        report: dict = {}
        ingest_batch(together, [feeds[i][step] for i in range(3)], budget=int(2.5 * one), report=report)
        assert report["forwards"] == 2 and report["peak_bytes"] <= report["budget"]
    for a, b in zip(solo, together):
        ra, rb = (s.ask("What happened?", keep_logits=True, sampling=Sampling(max_new_tokens=2)) for s in (a, b))
        assert (ra.logits[0] - rb.logits[0]).abs().max().item() < 1e-4


def test_a_batch_budget_below_one_stream_is_one_clear_error(tiny):
    ms = MemoryStream(tiny, MemoryConfig(policy="sliding", device_budget=64 * 2**20, answer_tokens=64))
    with pytest.raises(ValueError, match="batch_budget: .* cannot hold one stream's batch copy"):
        ingest_batch([ms], _patches(1, 1), budget=1000)
