"""Answers picked from given choices: whole-choice log-probabilities exact, the stream unchanged, bad choices refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from longwatch.backbone.model import Sampling, prefill
from longwatch.ingest.patches import TemporalPatch
from longwatch.memory.config import MemoryConfig
from longwatch.backbone.choices import MAX_CHOICES
from longwatch.memory.stream import MemoryStream

SIZE = (64, 96)
QUESTION = "Which word was on the sign?"
CHOICES = ["KIWI", "a red circle, top left", "No sign was shown", "a red circle"]
SAMP = Sampling(max_new_tokens=8)


def _patches(n: int = 8) -> list[TemporalPatch]:
    rng = np.random.default_rng(5)
    return [TemporalPatch(i, rng.integers(0, 256, (2, *SIZE, 3), dtype=np.uint8), (2.0 * i, 2.0 * i + 0.5),
                          2.0 * i, 2.0 * i + 1.0) for i in range(n)]


PATCHES = _patches()


def _stream(bb, policy: str = "full", **kw) -> MemoryStream:
    ms = MemoryStream(bb, MemoryConfig(policy=policy, device_budget=64 * 2**20, host_budget=64 * 2**20,
                                       answer_tokens=64, **kw))
    for p in PATCHES:
        ms.ingest(p)
    return ms


def _reference_logprob(bb, patches: list[TemporalPatch], choice: str, at: int | None = None) -> float:
    """log P(choice, then <|im_end|>) from a non-streaming forward of prefix and patches, then question and choice
    (at position `at`: after patches that were encoded but are hidden; default right after `patches`)."""
    segs = [bb.layout.prefix()] + [bb.patch_segment(p.frames, p.t_start, p.t_end, SIZE, p.t_mid) for p in patches]
    ids = bb.layout.encode_text(choice)
    cache = bb.new_cache()
    end = prefill(bb.model, cache, segs, 0).next_position
    tail = [bb.layout.question(QUESTION), bb.layout.text_segment(choice)]
    logits = prefill(bb.model, cache, tail, end if at is None else at, logits_to_keep=len(ids) + 1).logits
    lp = torch.log_softmax(logits.double(), -1)
    return float(sum(lp[j, t] for j, t in enumerate(ids + [bb.layout.im_end])))


def test_choice_logprobs_equal_a_full_forward_and_the_pick_is_their_argmax(tiny):
    ms = _stream(tiny)
    ans = ms.ask(QUESTION, sampling=SAMP, choices=CHOICES)
    got = {c["choice"]: c["logprob"] for c in ans.choices}
    for c in CHOICES:
        assert got[c] == pytest.approx(_reference_logprob(tiny, PATCHES, c), abs=1e-3)
    best = max(CHOICES, key=lambda c: got[c])
    assert ans.text == best and ans.token_ids == tiny.layout.encode_text(best)
    assert sum(c["prob"] for c in ans.choices) == pytest.approx(1.0, abs=1e-3)
    assert all(c["prob"] == pytest.approx(math.exp(got[c["choice"]]) / sum(math.exp(v) for v in got.values()), abs=1e-3)
               for c in ans.choices)
    assert ans.evidence and ans.ttft_s > 0


def test_scoring_leaves_the_stream_as_it_was(tiny):
    ms = _stream(tiny)
    before = ms.store.cache.length
    free = ms.ask(QUESTION, sampling=SAMP, keep_logits=True)
    ms.ask(QUESTION, sampling=SAMP, choices=CHOICES)
    assert ms.store.cache.length == before
    again = ms.ask(QUESTION, sampling=SAMP, keep_logits=True)
    assert again.token_ids == free.token_ids
    assert (again.logits[0] - free.logits[0]).abs().max().item() < 1e-5
    ms.ingest(TemporalPatch(len(PATCHES), PATCHES[0].frames, (16.0, 16.5), 16.0, 17.0))  # ingest still works


def test_until_hides_later_patches_from_the_choices_too(tiny):
    ms = _stream(tiny)
    ans = ms.ask(QUESTION, sampling=SAMP, choices=CHOICES, until=8.0)  # patches 0-3 have played
    got = {c["choice"]: c["logprob"] for c in ans.choices}
    after_all = ms.store.next_position  # hidden patches keep their positions: the question comes after them
    for c in CHOICES[:2]:
        assert got[c] == pytest.approx(_reference_logprob(tiny, PATCHES[:4], c, after_all), abs=1e-3)
        assert got[c] != pytest.approx(_reference_logprob(tiny, PATCHES, c), abs=1e-2)  # the later ones do matter


def test_a_temperature_draws_from_the_choices_with_its_seed(tiny):
    ms = _stream(tiny)
    draws = {ms.ask(QUESTION, sampling=Sampling(temperature=50.0, seed=s), choices=CHOICES).text for s in range(12)}
    assert draws <= set(CHOICES) and len(draws) > 1  # near-uniform at a high temperature
    same = [ms.ask(QUESTION, sampling=Sampling(temperature=50.0, seed=3), choices=CHOICES).text for _ in range(2)]
    assert same[0] == same[1]


@pytest.mark.parametrize("policy", ["rekv", "sliding", "infinipot", "streammem", "livevlm"])
def test_every_kv_family_picks_one_of_the_choices(tiny, policy):
    ms = _stream(tiny, policy, window_blocks=2)
    ans = ms.ask(QUESTION, sampling=SAMP, choices=CHOICES)
    assert ans.text in CHOICES and len(ans.choices) == len(CHOICES)
    assert ans.memory["tiers"]


@pytest.mark.parametrize("bad, message", [
    ([], "at least one"), (["KIWI", " KIWI "], "listed twice"), (["KIWI", "  "], "empty choice"),
    ("KIWI", "give a list"), ([f"w{i}" for i in range(MAX_CHOICES + 1)], f"at most {MAX_CHOICES}"),
    (["word " * 40], "tokens; at most 32"),
])
def test_bad_choices_are_refused_by_name_before_any_forward(tiny, bad, message):
    ms = _stream(tiny)
    before = ms.store.cache.length
    with pytest.raises(ValueError, match=message):
        ms.ask(QUESTION, sampling=SAMP, choices=bad)
    assert ms.store.cache.length == before
    assert ms.ask(QUESTION, sampling=SAMP, choices=CHOICES).text in CHOICES
