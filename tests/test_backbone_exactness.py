"""Streaming prefill equals one full-sequence forward (tiny preset, fp32, DeepStack on)."""

from __future__ import annotations

import torch

from longwatch.backbone.inputs import Segment, mrope_positions
from longwatch.backbone.inputs import pack
from longwatch.backbone.model import Sampling, decode, prefill
from tests.conftest import random_frames

SIZE = (64, 96)  # 2x3 merged tokens per patch


def _segments(bb, n: int, question: str = "What is written on the sign?"):
    segs = [bb.layout.prefix()]
    for i, f in enumerate(random_frames(n, 80, 120, seed=1)):
        segs.append(bb.patch_segment(f, i * 1.0, i * 1.0 + 1.0, SIZE, t_mid=i + 0.25))
    return segs, bb.layout.question(question)


def test_deepstack_is_active(tiny):
    # Without DeepStack the tiny model would not need per-chunk pixel values; make sure it is on.
    assert len(tiny.model.config.vision_config.deepstack_visual_indexes) == 3
    assert tiny.model.config.text_config.num_hidden_layers >= 3


def test_patch_by_patch_prefill_equals_full_forward(tiny):
    segs, q = _segments(tiny, 5)
    full_cache = tiny.new_cache()
    full = prefill(tiny.model, full_cache, segs + [q], 0, logits_to_keep=0)

    cache, offset, logits = tiny.new_cache(), 0, []
    for seg in segs + [q]:
        r = prefill(tiny.model, cache, [seg], offset, logits_to_keep=0)
        offset = r.next_position
        logits.append(r.logits)
    streamed = torch.cat(logits)
    assert streamed.shape == full.logits.shape
    assert (streamed - full.logits).abs().max().item() < 1e-4
    assert offset == full.next_position


def test_several_patches_per_chunk_equal_full_forward(tiny):
    segs, q = _segments(tiny, 6)
    full = prefill(tiny.model, tiny.new_cache(), segs + [q], 0)
    cache = tiny.new_cache()
    r = prefill(tiny.model, cache, segs[:1], 0)
    r = prefill(tiny.model, cache, segs[1:4], r.next_position)
    r = prefill(tiny.model, cache, segs[4:], r.next_position)
    r = prefill(tiny.model, cache, [q], r.next_position)
    assert (r.logits - full.logits).abs().max().item() < 1e-4


def test_whole_sequence_matches_transformers_own_positions(tiny):
    """Our explicit positions equal get_rope_index, and the model's implicit path gives the same logits."""
    segs, q = _segments(tiny, 3)
    inputs, positions, _ = pack(segs + [q], 0)
    ref_pos, _ = tiny.model.model.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"],
                                                video_grid_thw=inputs["video_grid_thw"])
    assert torch.equal(ref_pos[:, 0], positions)
    tiny.model.model.rope_deltas = None
    with torch.inference_mode():
        out = tiny.model(input_ids=inputs["input_ids"], mm_token_type_ids=inputs["mm_token_type_ids"],
                         pixel_values_videos=inputs["pixel_values_videos"], video_grid_thw=inputs["video_grid_thw"])
    tiny.model.model.rope_deltas = None  # the implicit path leaves state behind; never rely on it
    ours = prefill(tiny.model, tiny.new_cache(), segs + [q], 0, logits_to_keep=0)
    assert (out.logits[0] - ours.logits).abs().max().item() < 1e-4


def test_pixels_change_the_answer_logits(tiny):
    """Guards against a prefill that silently drops the vision input."""
    segs, q = _segments(tiny, 2)
    a = prefill(tiny.model, tiny.new_cache(), segs + [q], 0).logits
    segs[1].pixel_values = segs[1].pixel_values.flip(0)
    b = prefill(tiny.model, tiny.new_cache(), segs + [q], 0).logits
    assert (a - b).abs().max().item() > 1e-4


def test_greedy_answers_identical(tiny):
    segs, q = _segments(tiny, 4)
    samp = Sampling(temperature=0.0, max_new_tokens=12)

    c1 = tiny.new_cache()
    r1 = prefill(tiny.model, c1, segs + [q], 0)
    a1 = decode(tiny.model, c1, r1.logits[-1], r1.next_position, tiny.tokenizer, tiny.layout.stop_ids, samp)

    c2, off = tiny.new_cache(), 0
    for seg in segs + [q]:
        r2 = prefill(tiny.model, c2, [seg], off)
        off = r2.next_position
    a2 = decode(tiny.model, c2, r2.logits[-1], off, tiny.tokenizer, tiny.layout.stop_ids, samp)
    assert a1.token_ids == a2.token_ids and len(a1.token_ids) > 0


def test_decode_positions_continue_after_prompt(tiny):
    """Decoding with the cache equals one forward over prompt + the generated ids, at every step.

    The reference is built from the generated token ids themselves (no detokenise/retokenise round
    trip, which need not give the same ids back), so the comparison always runs. Stop tokens are
    disabled so the loop makes all max_new_tokens - 1 cached steps whatever the random weights pick.
    """
    segs, q = _segments(tiny, 2)
    samp = Sampling(temperature=0.0, max_new_tokens=5)
    cache = tiny.new_cache()
    r = prefill(tiny.model, cache, segs + [q], 0)
    out = decode(tiny.model, cache, r.logits[-1], r.next_position, tiny.tokenizer, [], samp, keep_logits=True)
    assert len(out.token_ids) == len(out.logits) == samp.max_new_tokens
    fed = torch.tensor(out.token_ids[:-1])  # the last sampled token is never fed back
    types = torch.zeros_like(fed, dtype=torch.int32)
    pos, span = mrope_positions(types, [], 0)
    gen = Segment(fed, types, pos, span)
    ref = prefill(tiny.model, tiny.new_cache(), segs + [q, gen], 0, logits_to_keep=len(gen) + 1)
    # the reference puts the generated tokens right after the prompt, one position each on all three M-RoPE axes
    after_prompt = torch.arange(r.next_position, r.next_position + len(gen)).expand(3, -1)
    assert torch.equal(ref.positions[:, -len(gen):], after_prompt)
    assert cache.get_seq_length() == ref.positions.shape[1]
    # step i's logits (from the cache) equal the full forward's logits at prompt end + i
    assert (ref.logits - torch.stack(out.logits)).abs().max().item() < 1e-4
