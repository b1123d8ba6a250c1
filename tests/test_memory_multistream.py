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
