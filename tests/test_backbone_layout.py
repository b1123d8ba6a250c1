"""Prompt layout, M-RoPE positions, RoPE shifts and the in-place KV cache."""

from __future__ import annotations

import pytest
import torch

from longwatch.backbone.cache import CacheFull, KVCache
from longwatch.backbone.inputs import apply_shift, mrope_positions, shift_cos_sin
from longwatch.backbone.model import prefill
from tests.conftest import random_frames


def test_patch_segment_layout(tiny):
    f = random_frames(1)[0]
    seg = tiny.patch_segment(f, 90.0, 91.0, (64, 96), t_mid=90.25)
    text = tiny.tokenizer.decode(seg.input_ids)
    assert text.startswith("<90.2 seconds><|vision_start|><|video_pad|>")
    assert text.endswith("<|video_pad|><|vision_end|>")
    n = int((seg.input_ids == tiny.layout.video_pad).sum())
    assert n == 6 and int((seg.token_types == 2).sum()) == 6
    # timestamp digits tokenise one by one: "<", "9", "0", ".", "2", " seconds", ">" -> 7 tokens
    assert len(seg) == 7 + 1 + 6 + 1
    # vision group: T fixed, H/W follow the 2x3 merged grid, counter advances by max(2, 3) = 3
    vis = seg.positions[:, seg.token_types == 2]
    assert vis[0].unique().numel() == 1
    assert vis[1].tolist() == [8, 8, 8, 9, 9, 9] and vis[2].tolist() == [8, 9, 10, 8, 9, 10]
    assert seg.span == 8 + 3 + 1


def test_prefix_and_question_follow_chat_template(tiny):
    assert tiny.tokenizer.decode(tiny.layout.prefix().input_ids) == "<|im_start|>user\n"
    q = tiny.tokenizer.decode(tiny.layout.question("When did the door open?").input_ids)
    assert q == "When did the door open?<|im_end|>\n<|im_start|>assistant\n"
    assert tiny.layout.im_end in tiny.layout.stop_ids


def test_positions_equal_get_rope_index_for_mixed_runs(tiny):
    types = torch.tensor([0, 0, 0, 2, 2, 2, 2, 0, 0, 2, 2, 2, 2, 2, 2, 0])
    grids = [(2, 2), (2, 3)]
    ours, nxt = mrope_positions(types, grids, 0)
    ids = torch.where(types == 2, torch.tensor(tiny.layout.video_pad), torch.tensor(100))[None]
    thw = torch.tensor([[1, 4, 4], [1, 4, 6]])
    ref, _ = tiny.model.model.get_rope_index(ids, types[None], video_grid_thw=thw)
    assert torch.equal(ref[:, 0], ours)
    assert nxt == int(ours.max()) + 1
    with pytest.raises(ValueError):
        mrope_positions(types, [(2, 2)], 0)


def test_rope_shift_equals_prefill_at_shifted_positions(tiny):
    """Rotating cached keys by D equals prefilling the same tokens D positions later."""
    segs = [tiny.layout.prefix()] + [tiny.patch_segment(f, i, i + 1, (64, 96)) for i, f in enumerate(random_frames(2))]
    a, b = tiny.new_cache(), tiny.new_cache()
    prefill(tiny.model, a, segs, 0)
    prefill(tiny.model, b, segs, 1000)
    cos, sin = shift_cos_sin(tiny.rotary_emb, 1000, torch.float32, tiny.device)
    for layer in range(tiny.dims.num_layers):
        shifted = apply_shift(a.keys_view(layer, 0, a.length), cos, sin)
        assert (shifted - b.keys_view(layer, 0, b.length)).abs().max().item() < 1e-4
        assert (a.values_view(layer, 0, a.length) - b.values_view(layer, 0, b.length)).abs().max().item() < 1e-4


def test_kv_cache_remove_truncate_and_capacity():
    c = KVCache(2, 1, 4, torch.float32, "cpu", max_tokens=40)
    kv = torch.arange(2 * 2 * 1 * 30 * 4, dtype=torch.float32).view(2, 2, 1, 30, 4)
    c.append(kv)
    assert c.length == 30
    c.remove(5, 12)  # shift 18 tokens left by 7: chunked copy must not smear overlapping ranges
    expect = torch.cat([kv[:, :, :, :5], kv[:, :, :, 12:]], dim=3)
    assert torch.equal(c.read(0, c.length), expect)
    c.truncate(10)
    assert c.length == 10 and c.get_seq_length() == 10
    with pytest.raises(CacheFull):
        c.append(torch.zeros(2, 2, 1, 31, 4))
    assert c.allocated_bytes <= 40 * c.bytes_per_token


@pytest.mark.parametrize("n,start,end", [(600, 5, 300), (600, 0, 600), (700, 100, 101), (40, 39, 40)])
def test_kv_cache_remove_large_and_small_gaps(n, start, end):
    c = KVCache(1, 1, 2, torch.float32, "cpu")
    kv = torch.arange(2 * n * 2, dtype=torch.float32).view(1, 2, 1, n, 2)
    c.append(kv)
    c.remove(start, end)
    assert torch.equal(c.read(0, c.length), torch.cat([kv[:, :, :, :start], kv[:, :, :, end:]], dim=3))
