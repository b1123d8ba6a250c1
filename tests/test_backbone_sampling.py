"""Decoding like transformers: its logits processors, the checkpoint's generation config, no host sync per token."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import GenerationConfig
from transformers.generation.streamers import BaseStreamer

from longwatch.backbone.config import ModelConfig, Sampling, checkpoint_sampling
from longwatch.backbone.model import AnswerStreamer, Backbone, decode, pick, prefill, processors


class ScalarSyncs(TorchDispatchMode):
    """Counts tensor-to-Python-scalar reads (.item(), int(t), `x in t`): each one is a host sync on CUDA."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


def _answer(bb: Backbone, sampling: Sampling, stop_ids: list[int] | None = None, sync_every: int = 1,
            on_text=None, question: str = "What is on the sign?"):
    cache = bb.new_cache()
    r = prefill(bb.model, cache, [bb.layout.prefix(), bb.layout.question(question)], 0)
    return decode(bb.model, cache, r.logits[-1], r.next_position, bb.tokenizer,
                  bb.layout.stop_ids if stop_ids is None else stop_ids, sampling, on_text, sync_every=sync_every)


def test_greedy_tokens_stay_on_the_device_and_reach_the_host_in_chunks(tiny):
    samp = Sampling(max_new_tokens=20)
    every = _answer(tiny, samp, stop_ids=[])
    pieces: list[str] = []
    with ScalarSyncs() as syncs:
        chunked = _answer(tiny, samp, stop_ids=[], sync_every=8, on_text=pieces.append)
    assert chunked.token_ids == every.token_ids and chunked.text == every.text and len(every.token_ids) == 20
    assert syncs.count == 0  # sampling, the next step's input and the stop check read no scalar
    assert 1 <= len(pieces) <= 1 + math.ceil(19 / 8)  # the first token at once, then a copy every 8


def test_an_end_of_turn_inside_a_chunk_ends_the_answer_there(tiny):
    samp = Sampling(temperature=1.0, max_new_tokens=20, seed=1)  # seeded draws: varied tokens, reproducible
    ref = _answer(tiny, samp, stop_ids=[]).token_ids
    k = next(i for i in range(3, 20) if ref[i] not in ref[:i])
    for sync in (1, 8):
        out = _answer(tiny, samp, stop_ids=[ref[k]], sync_every=sync)
        assert out.stopped and out.token_ids == ref[:k], sync
        assert out.text == tiny.tokenizer.decode(ref[:k], skip_special_tokens=True)


def _draws(sampling: Sampling, logits: torch.Tensor, n: int = 400) -> set[int]:
    gen = torch.Generator().manual_seed(0) if sampling.temperature > 0 else None  # as decode draws
    procs = processors(sampling)
    return {int(pick(logits, torch.empty(0, dtype=torch.long), procs, gen)) for _ in range(n)}


LOGITS = torch.log(torch.tensor([0.30, 0.25, 0.20, 0.10, 0.08, 0.04, 0.02, 0.01]))


@pytest.mark.parametrize("sampling,allowed", [
    (Sampling(temperature=1.0), set(range(8))),
    (Sampling(temperature=1.0, top_k=3), {0, 1, 2}),
    (Sampling(temperature=1.0, top_p=0.5), {0, 1}),  # 0.30 + 0.25 reaches half
    (Sampling(temperature=1.0, min_p=0.5), {0, 1, 2}),  # p >= 0.15 = 0.5 x 0.30
    (Sampling(temperature=1.0, top_k=1), {0}),
    (Sampling(temperature=0.0), {0}),
])
def test_each_processor_limits_what_can_be_drawn(sampling, allowed):
    assert _draws(sampling, LOGITS) == allowed


def test_repetition_penalty_discourages_the_answers_own_tokens():
    procs = processors(Sampling(repetition_penalty=100.0))  # applies when greedy too, as in transformers
    seen = torch.tensor([0])
    assert int(pick(LOGITS, seen, procs, None)) == 1


def test_seeded_sampling_repeats_and_seeds_differ(tiny):
    a, b, c = (_answer(tiny, Sampling(temperature=1.0, top_k=50, max_new_tokens=12, seed=s)).token_ids
               for s in (7, 7, 8))
    assert a == b and a != c


def test_the_checkpoints_generation_config_fills_what_the_config_leaves_unset():
    sampler = GenerationConfig(do_sample=True, temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05)
    unset = ModelConfig(max_new_tokens=32, seed=3)
    assert checkpoint_sampling(unset, sampler) == Sampling(0.7, 0.8, 32, 3, top_k=20, repetition_penalty=1.05)
    forced = checkpoint_sampling(ModelConfig(temperature=0.0), sampler)
    assert forced.temperature == 0.0 and forced.repetition_penalty == 1.05  # the penalty applies greedy too
    assert checkpoint_sampling(unset.greedy(), sampler) == Sampling(max_new_tokens=32, seed=3)
    greedy_ckpt = GenerationConfig()  # do_sample False; its top_k=50 default must not leak into sampling
    assert checkpoint_sampling(ModelConfig(temperature=0.7), greedy_ckpt) == Sampling(temperature=0.7)
    assert checkpoint_sampling(unset, None) == Sampling(max_new_tokens=32, seed=3)


def test_the_backbone_decodes_as_its_checkpoint_says(tiny):
    tiny.model.generation_config = GenerationConfig(do_sample=True, temperature=0.6, top_k=5)
    try:
        assert Backbone(tiny.loaded, ModelConfig(name="tiny")).sampling == Sampling(temperature=0.6, top_k=5)
    finally:
        tiny.model.generation_config = GenerationConfig()


def test_the_streamer_speaks_transformers_streamer_interface(tiny):
    pieces: list[str] = []
    s = AnswerStreamer(tiny.tokenizer, pieces.append)
    ids = tiny.tokenizer.encode("Café KIWI")
    s.put(torch.tensor(ids[:2]))
    s.put(ids[2:])
    s.end()
    assert isinstance(s, BaseStreamer) and "".join(pieces) == s.text == "Café KIWI"
