"""Answers that run at the same time decode in one batched forward per token, and each equals its answer alone."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from longwatch.backbone.model import Sampling
from longwatch.ingest.patches import TemporalPatch
from longwatch.memory.config import MemoryConfig
from longwatch.memory.stream import MemoryStream

MB = 2**20
QUESTIONS = ["What happened?", "What is on screen now?", "What was shown at 00:02?", "Describe the video."]


def _patches(seed: int, n: int) -> list[TemporalPatch]:
    rng = np.random.default_rng(seed)
    return [TemporalPatch(i, rng.integers(0, 256, (2, 64, 96, 3), dtype=np.uint8), (i, i + 0.5), i, i + 1)
            for i in range(n)]


def _streams(tiny, lengths: list[int], **cfg) -> list[MemoryStream]:
    base = dict(policy="rekv", window_blocks=2, retrieve_blocks=2, device_budget=64 * MB, answer_tokens=64)
    out = []
    for i, n in enumerate(lengths):
        ms = MemoryStream(tiny, MemoryConfig(**{**base, **cfg}), f"s{i}")
        for p in _patches(10 + i, n):
            ms.ingest(p)
        out.append(ms)
    return out


def _at_once(streams: list[MemoryStream], sampling: Sampling, until: list[float | None] | None = None):
    """Every stream asks its question on its own thread, all released together; the answers in order."""
    until = until or [None] * len(streams)
    gate, out, errors = threading.Barrier(len(streams)), [None] * len(streams), []

    def ask(i: int) -> None:
        try:
            gate.wait(10)
            out[i] = streams[i].ask(QUESTIONS[i % len(QUESTIONS)], keep_logits=True, sampling=sampling, until=until[i])
        except Exception as e:  # the test fails on any
            errors.append(e)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(streams))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return out


def _max_diff(a, b) -> float:
    assert len(a.logits) == len(b.logits)
    return max((x - y).abs().max().item() for x, y in zip(a.logits, b.logits))


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_concurrent_answers_share_forwards_and_each_equals_its_answer_alone(tiny, attn):
    """Four streams of different lengths (rows padded to the longest), one hiding its newest blocks (until=):
    asked at once, they decode in shared forwards, and each answer's tokens and logits equal asking it alone."""
    before = tiny.model.config._attn_implementation
    tiny.model.config._attn_implementation = attn
    try:
        streams = _streams(tiny, [3, 7, 5, 9])
        lengths = [s.cache.length for s in streams]
        samp = Sampling(max_new_tokens=12, temperature=0.0)
        until = [None, None, None, 4.0]
        alone = [s.ask(QUESTIONS[i], keep_logits=True, sampling=samp, until=until[i], copy_limit=0)
                 for i, s in enumerate(streams)]  # in place: no rows
        rows = tiny.rows
        steps, tokens = rows.steps, rows.batched_tokens
        together = _at_once(streams, samp, until)
    finally:
        tiny.model.config._attn_implementation = before
    for a, b in zip(alone, together):
        assert a.token_ids == b.token_ids and b.copied_bytes > 0
        assert _max_diff(a, b) < 1e-4
    shared = (rows.batched_tokens - tokens) / (rows.steps - steps)
    assert shared > 1.5, f"{shared:.2f} answers per forward: the answers did not decode together"
    assert rows.allocated_bytes == 0  # the last row to leave freed the buffers
    assert [s.cache.length for s in streams] == lengths  # questions and answers left no trace


def test_an_answer_that_does_not_fit_the_batch_budget_decodes_alone_and_equally(tiny):
    streams = _streams(tiny, [4, 6], answer_batch_budget=1)  # one byte: no row fits
    samp = Sampling(max_new_tokens=8, temperature=0.0)
    alone = [s.ask(QUESTIONS[i], keep_logits=True, sampling=samp, copy_limit=0) for i, s in enumerate(streams)]
    steps = tiny.rows.steps
    together = _at_once(streams, samp)
    assert tiny.rows.steps == steps  # nobody joined
    for a, b in zip(alone, together):
        assert a.token_ids == b.token_ids and _max_diff(a, b) < 1e-5 and b.copied_bytes > 0


def test_sampled_answers_together_draw_the_same_tokens_as_alone(tiny):
    """Each answer keeps its own seeded generator: batching changes no sampled token."""
    streams = _streams(tiny, [5, 5, 6])
    samp = Sampling(max_new_tokens=10, temperature=0.9, top_p=0.95, seed=7)
    alone = [s.ask(QUESTIONS[i], keep_logits=True, sampling=samp) for i, s in enumerate(streams)]
    together = _at_once(streams, samp)
    for a, b in zip(alone, together):
        assert a.token_ids == b.token_ids
