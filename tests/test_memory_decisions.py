"""Policy decisions, retrieval math, the time parser and the indexes, on made-up tensors (no model)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextRotaryEmbedding

from longwatch.backbone.inputs import VIDEO, apply_shift, mrope_cos_sin, mrope_positions
from longwatch.backbone.presets import preset_config
from longwatch.memory.block import Block, compress_kv, shrink
from longwatch.memory.config import MemoryConfig
from longwatch.memory.merge import merge_page
from longwatch.memory.policies import REGISTRY, Exit, make_policy
from longwatch.memory.policies import fit_global, keep_top, novelty_scores, proxy_attention_scores, tar_van_scores
from longwatch.memory.retrieval import FaissIndex, TorchIndex
from longwatch.memory.retrieval import block_summary, combine_layers, question_query, spread, top_k
from longwatch.memory.retrieval import parse_clock, parse_time_ranges


def _block(i: int, n_vis: int, scores: torch.Tensor | None = None, head: int = 8) -> Block:
    return Block(id=i, kind="patch", t_start=float(i), t_end=i + 1.0, t_mid=i + 0.25, pos_start=i * 20, span=20,
                 n_head=head, n_vis=n_vis, n_tail=1, scores=scores)


def test_registry_and_exit_actions():
    actions = {name: make_policy(MemoryConfig(policy=name, disk_budget=1)).on_exit for name in REGISTRY}
    assert actions == {"full": Exit.KEEP, "sliding": Exit.DROP, "rekv": Exit.OFFLOAD,
                       "infinipot": Exit.COMPRESS, "streammem": Exit.COMPRESS, "livevlm": Exit.OFFLOAD,
                       "streamchat": Exit.DROP, "videorag": Exit.DROP}
    assert [n for n in REGISTRY if make_policy(MemoryConfig(policy=n, disk_budget=1)).pages] == ["livevlm"]
    assert [n for n in REGISTRY if make_policy(MemoryConfig(policy=n, disk_budget=1)).captions] == ["streamchat", "videorag"]
    assert [n for n in REGISTRY if make_policy(MemoryConfig(policy=n, disk_budget=1)).frames] == ["videorag"]
    assert make_policy(MemoryConfig(policy="full")).window(MemoryConfig()) is None


def test_livevlm_pages_keep_the_tokens_that_changed_since_the_previous_frame():
    """Novelty: 0 for a key equal to the one at the same place in the previous patch, 1 for its opposite, 1 for
    every token of a first patch (nothing to be redundant with); a page keeps the most novel per layer."""
    torch.manual_seed(0)
    prev = torch.randn(2, 2, 6, 8)
    keys = prev.clone()
    keys[0, :, 1], keys[0, :, 4], keys[1, :, 2] = -prev[0, :, 1], torch.randn(2, 8), -prev[1, :, 2]
    s = novelty_scores(keys, prev)
    assert s.shape == (2, 6) and torch.allclose(s[0, [0, 2, 3, 5]], torch.zeros(4), atol=1e-6)
    assert torch.allclose(s[0, 1], torch.tensor(1.0)) and 0 < s[0, 4] < 1 and torch.allclose(s[1, 2], torch.tensor(1.0))
    assert torch.equal(novelty_scores(keys, None), torch.ones(2, 6))
    policy = make_policy(MemoryConfig(policy="livevlm", compress_ratio=2 / 6))
    assert policy.keep(s, policy.keep_count(6))[0].tolist() == [1, 4]


ROTARY = Qwen3VLTextRotaryEmbedding(preset_config("tiny").text_config)  # the tiny preset's M-RoPE: head_dim 32
PAGE_HEAD, PAGE_GRID, PAGE_START = 3, (2, 3), 1000  # text before the vision tokens, merged grid, first position


def _page_block(n_head: int = PAGE_HEAD, grid: tuple[int, int] = PAGE_GRID) -> tuple[Block, torch.Tensor]:
    """A patch block laid out as the model lays one out (text, a vision group, <|vision_end|>) at PAGE_START and
    the M-RoPE rotations of its positions [1, tokens, 32] (cos, sin), from the tiny preset's rotary module."""
    n_vis = grid[0] * grid[1]
    types = torch.zeros(n_head + n_vis + 1, dtype=torch.int32)
    types[n_head: n_head + n_vis] = VIDEO
    pos, span = mrope_positions(types, [grid], PAGE_START)
    block = Block(id=0, kind="patch", t_start=0.0, t_end=1.0, t_mid=0.5, pos_start=PAGE_START, span=span - PAGE_START,
                  n_head=n_head, n_vis=n_vis, n_tail=1, grid=grid, n_vis_orig=n_vis)
    return block, torch.stack(mrope_cos_sin(ROTARY, pos[:, None, :], torch.device("cpu")))


def _rotated_kv(pre_keys: torch.Tensor, values: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """[layers, kv_heads, tokens, 32] pre-RoPE keys and values -> block K/V as the cache holds them."""
    return torch.stack([apply_shift(pre_keys, rope[0, 0], rope[1, 0]), values], dim=1)


def _unrotated(keys: torch.Tensor, at: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Keys [layers, kv_heads, k, 32] un-rotated at block token indices `at` [layers, k]: their pre-RoPE form."""
    cos, sin = rope[0, 0][at], rope[1, 0][at]  # [layers, k, 32]
    return apply_shift(keys, cos[:, None], -sin[:, None])


def test_livevlm_page_merge_with_nothing_to_merge_is_the_unmerged_page():
    block, rope = _page_block()
    kv = _rotated_kv(torch.randn(2, 2, block.n_tokens, 32), torch.randn(2, 2, block.n_tokens, 32), rope)
    scores = torch.rand(2, block.n_vis)
    whole = shrink(dataclasses.replace(block), kv, scores, block.n_vis, keep_top, False, ROTARY)
    assert torch.equal(whole, shrink(block, kv, scores, block.n_vis, keep_top, False))
    vis = kv[:, :, :, PAGE_HEAD: PAGE_HEAD + block.n_vis]
    every = torch.arange(block.n_vis).expand(2, -1)
    merged, counts = merge_page(vis, every, every, PAGE_GRID, ROTARY)
    assert torch.equal(merged, vis) and torch.equal(counts, torch.ones(2, block.n_vis))


def test_livevlm_page_merge_of_an_exact_duplicate_keeps_the_value_and_counts_two():
    """Token 1 is token 0 again one column to the right (same pre-RoPE key, same value): merged into token 0,
    which now stands for 2 tokens with its value bit for bit and its key as it was (up to float32 rotations)."""
    block, rope = _page_block(grid=(1, 2))
    pre, values = torch.randn(2, 2, block.n_tokens, 32), torch.randn(2, 2, block.n_tokens, 32)
    pre[:, :, PAGE_HEAD + 1], values[:, :, PAGE_HEAD + 1] = pre[:, :, PAGE_HEAD], values[:, :, PAGE_HEAD]
    kv = _rotated_kv(pre, values, rope)
    vis = kv[:, :, :, PAGE_HEAD: PAGE_HEAD + 2]
    assert not torch.allclose(vis[:, 0, :, 0], vis[:, 0, :, 1])  # rotated at different positions
    merged, counts = merge_page(vis, torch.zeros(2, 1, dtype=torch.long), torch.arange(2).expand(2, -1), (1, 2), ROTARY)
    assert torch.equal(counts, torch.full((2, 1), 2.0))
    assert torch.equal(merged[:, 1], vis[:, 1, :, :1])
    assert torch.allclose(merged[:, 0], vis[:, 0, :, :1], atol=1e-5)


def test_livevlm_page_merge_takes_count_weighted_means_and_rotates_keys_back_at_the_kept_places():
    """Hand-built 2 x 3 grid. Layer 0 keeps tokens 1 and 4 (highest scores): 0 and 2 are near 1's key, 3 and 5
    near 4's, so each kept token stands for 3 and holds the mean of their values ((1 + 2 + 3) / 3 = 2 and
    (4 + 5 + 6) / 3 = 5) and, un-rotated at its own position, the mean of their pre-RoPE keys. Layer 1 keeps 0 and
    5: 1-4 share 0's key, 5 is opposite, absorbs nothing and is the dropped page's token bit for bit."""
    block, rope = _page_block()
    e = torch.eye(32)
    vis_pre = torch.stack([
        torch.stack([e[0] + 0.1 * e[7], e[0], e[0] + 0.2 * e[9], e[5] + 0.3 * e[2], e[5], e[5] + 0.1 * e[3]]),
        torch.stack([e[3], e[3], e[3] + 0.1 * e[1], e[3] + 0.2 * e[8], e[3], -e[3]])])  # [layers, 6, 32]
    pre = torch.randn(2, 2, block.n_tokens, 32)
    pre[:, :, PAGE_HEAD: PAGE_HEAD + 6] = vis_pre[:, None]
    values = torch.randn(2, 2, block.n_tokens, 32)
    values[:, :, PAGE_HEAD: PAGE_HEAD + 6] = torch.arange(1.0, 7.0)[None, None, :, None]
    kv = _rotated_kv(pre, values, rope)
    scores = torch.tensor([[0.1, 0.9, 0.2, 0.3, 0.8, 0.4], [0.9, 0.1, 0.2, 0.3, 0.4, 0.8]])
    dropped = shrink(dataclasses.replace(block), kv, scores, 2, keep_top, False)
    page = shrink(block, kv, scores, 2, keep_top, False, ROTARY)
    assert page.shape == dropped.shape == (2, 2, 2, PAGE_HEAD + 2 + 1, 32) and block.kept.tolist() == [[1, 4], [0, 5]]
    assert torch.equal(page[:, :, :, :PAGE_HEAD], kv[:, :, :, :PAGE_HEAD]) and torch.equal(page[..., -1, :], kv[..., -1, :])
    vals = page[:, 1, :, PAGE_HEAD: PAGE_HEAD + 2]  # [layers, kv_heads, 2, 32]
    assert torch.allclose(vals[0, :, 0], torch.full((2, 32), 2.0)) and torch.allclose(vals[0, :, 1], torch.full((2, 32), 5.0))
    assert torch.allclose(vals[1, :, 0], torch.full((2, 32), 3.0))  # (1 + 2 + 3 + 4 + 5) / 5
    expected = torch.stack([torch.stack([vis_pre[0, :3].mean(0), vis_pre[0, 3:].mean(0)]),
                            torch.stack([vis_pre[1, :5].mean(0), vis_pre[1, 5]])])  # [layers, 2, 32]
    back = _unrotated(page[:, 0, :, PAGE_HEAD: PAGE_HEAD + 2], PAGE_HEAD + block.kept, rope)
    assert torch.allclose(back, expected[:, None].expand(2, 2, 2, 32), atol=1e-5)
    assert torch.equal(page[1, :, :, PAGE_HEAD + 1], dropped[1, :, :, PAGE_HEAD + 1])  # absorbed nothing


def test_livevlm_page_merge_is_a_checked_switch():
    assert make_policy(MemoryConfig(policy="livevlm")).merges  # merging is the default
    assert not make_policy(MemoryConfig(policy="livevlm", page_merge=False)).merges
    assert not any(make_policy(MemoryConfig(policy=n, disk_budget=1)).merges for n in REGISTRY if n != "livevlm")
    with pytest.raises(ValueError, match="page_merge: must be true or false"):
        MemoryConfig(page_merge=1)


def test_keep_top_is_sorted_and_per_layer():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.7], [0.8, 0.1, 0.2, 0.9]])
    assert keep_top(scores, 2).tolist() == [[1, 3], [0, 3]]


def test_fit_global_ranks_tokens_across_blocks_and_evicts_oldest_text():
    a = _block(0, 4, torch.tensor([[0.9, 0.8, 0.1, 0.1]] * 2))
    b = _block(1, 4, torch.tensor([[0.7, 0.2, 0.2, 0.2]] * 2))
    fixed = 2 * (8 + 1)
    counts = fit_global([a, b], fixed + 3)
    assert counts == {0: 2, 1: 1}  # 0.9, 0.8 from a; 0.7 from b
    assert fit_global([a, b], 9 + 1) == {1: 1}  # only one block's text fits: the oldest goes
    assert fit_global([a, b], 100) == {0: 4, 1: 4}


def test_fit_global_ranks_each_layer_by_its_own_tokens():
    """After per-layer compression, column j is a different token in each layer. Block a is worth one
    token (its best in each layer scores 10) and block b two (6 and 6 in each layer); averaging columns
    across layers would see a as [5, 5] and give both tokens to b."""
    a = _block(0, 2, torch.tensor([[10.0, 0.0], [0.0, 10.0]]))
    b = _block(1, 2, torch.tensor([[6.0, 6.0], [6.0, 6.0]]))
    assert fit_global([a, b], 2 * (8 + 1) + 2) == {0: 1, 1: 1}
    # one layer with scores 100x larger does not decide alone: each layer is scaled by its own mean
    c = _block(0, 2, torch.tensor([[100.0, 0.0], [0.0, 0.0]]))
    d = _block(1, 2, torch.tensor([[90.0, 0.0], [1.0, 0.0]]))
    assert fit_global([c, d], 2 * (8 + 1) + 1) == {0: 0, 1: 1}  # d: 0.9 + 1.0 of the two layer means beats 1.0


def test_tar_van_scores_compare_across_blocks():
    """A patch that barely changed scores below one that changed, token for token (no per-block scaling)."""
    torch.manual_seed(2)
    prev = torch.randn(2, 2, 6, 8)
    values = torch.ones(2, 2, 6, 8)
    ref = torch.full((2,), 8**0.5)  # the stream's typical value norm: these values' own
    still = tar_van_scores(prev + 0.01 * torch.randn_like(prev), values, prev, ref)
    moved = tar_van_scores(torch.randn_like(prev), values, prev, ref)
    assert still.max() < 0.501 and still.max() < moved.min()  # min-max per block would give both a 1
    a, b = _block(0, 6, still), _block(1, 6, moved)
    assert fit_global([a, b], 2 * (8 + 1) + 6) == {0: 0, 1: 6}


def test_proxy_scores_over_the_cache_do_not_favour_small_blocks():
    """Softmax over the block alone gives a 1-token block score 1 whatever it holds; over the cache the
    proxies ran on, a dull token of a small block scores below the one token the proxies look for."""
    q = torch.tensor([1.0, 0, 0, 0]).view(1, 1, 1, 4)
    context = [torch.zeros(1, 20, 4)]
    small = torch.zeros(1, 1, 1, 4)  # one dull token
    big = torch.zeros(1, 1, 5, 4)
    big[0, 0, 2, 0] = 4.0  # one token the query matches
    assert proxy_attention_scores(small, q)[0, 0] == pytest.approx(1.0)
    s_small, s_big = proxy_attention_scores(small, q, context), proxy_attention_scores(big, q, context)
    assert s_small[0, 0] < s_big[0, 2]
    assert s_big.sum() < 1  # the rest of the attention went to the cache


def test_tar_van_prefers_changed_tokens_with_large_values():
    torch.manual_seed(0)
    prev = torch.randn(2, 2, 6, 8)
    keys = prev.clone()
    keys[:, :, 3] = torch.randn(2, 2, 8)  # token 3 changed since the previous patch
    values = torch.ones(2, 2, 6, 8)
    values[:, :, 5] *= 10  # token 5 carries a large value
    s = tar_van_scores(keys, values, prev)
    assert s.shape == (2, 6)
    top2 = set(torch.topk(s[0], 2).indices.tolist())
    assert top2 == {3, 5}


def test_proxy_attention_scores_follow_the_queries():
    keys = torch.zeros(1, 1, 5, 4)
    keys[0, 0, 2] = torch.tensor([4.0, 0, 0, 0])
    q = torch.tensor([1.0, 0, 0, 0]).view(1, 1, 1, 4).expand(1, 2, 3, 4)  # 2 heads share the kv head
    s = proxy_attention_scores(keys, q)
    assert int(torch.argmax(s[0])) == 2
    assert torch.allclose(s.sum(-1), torch.ones(1))


def test_compress_kv_keeps_text_and_per_layer_tokens():
    b = _block(0, 4, head=2)
    kv = torch.arange(2 * 2 * 1 * 7 * 1, dtype=torch.float32).view(2, 2, 1, 7, 1)
    keep = torch.tensor([[0, 3], [1, 2]])
    out = compress_kv(kv, b, keep, prototype=True)
    assert out.shape[3] == 2 + 2 + 1 + 1
    assert out[0, 0, 0, :, 0].tolist()[:5] == [0, 1, 2, 5, 6]
    assert out[1, 0, 0, :, 0].tolist()[:5] == [14, 15, 17, 18, 20]
    assert out[0, 0, 0, 5, 0].item() == pytest.approx(kv[0, 0, 0, 2:6, 0].mean().item())


def test_question_query_factorises_mean_dot_products():
    torch.manual_seed(1)
    q = torch.randn(5, 4, 8)  # tokens, 4 heads, head_dim
    k = torch.randn(7, 2, 8)  # block tokens, 2 kv heads
    direct = torch.stack([(q[:, h] @ k[:, h // 2].T).mean() for h in range(4)]).mean()
    fact = question_query([q], 2)[0] @ block_summary([k])[0]
    assert fact.item() == pytest.approx(direct.item(), rel=1e-5)


def test_combine_and_top_k():
    scores = torch.tensor([[1.0, 2.0, 3.0], [100.0, 300.0, 200.0]])  # layer 2 has a larger scale
    combined = combine_layers(scores)
    assert [b for b, _ in top_k([10, 11, 12], combined, 2)] == [11, 12]
    assert [b for b, _ in top_k([10, 11, 12], combined, 2, exclude={11})] == [12, 10]
    assert spread(list(range(10)), 3) == [0, 4, 9] or spread(list(range(10)), 3) == [0, 5, 9]


def test_rekv_select_puts_time_blocks_first():
    pol = make_policy(MemoryConfig(policy="rekv"))
    sel = pol.select([1, 2, 3], torch.tensor([[0.0, 5.0, 1.0]]), 2, forced=[2])
    assert [(s.block_id, s.reason) for s in sel] == [(2, "time"), (3, "retrieved"), (1, "retrieved")]


@pytest.mark.parametrize("cls", [TorchIndex, FaissIndex])
def test_indexes_score_all_blocks_per_layer(cls):
    torch.manual_seed(0)
    idx = cls(3, 16)
    rows = {i: torch.randn(3, 16) for i in range(6)}
    for i, r in rows.items():
        idx.add(i, r)
    idx.remove(4)
    q = torch.randn(3, 16)
    ids, s = idx.scores(q)
    assert sorted(ids) == [0, 1, 2, 3, 5]
    for col, bid in enumerate(ids):
        assert torch.allclose(s[:, col], (rows[bid] * q).sum(-1), atol=1e-4)


@pytest.mark.parametrize("question,now,expected", [
    ("What was on the sign at 01:30?", None, [(89.0, 91.0)]),
    ("what happened between 2:00 and 3:10", None, [(120.0, 190.0)]),
    ("From 1:00:00 to 1:02:30, who spoke?", None, [(3600.0, 3750.0)]),
    ("what did I see in the first minute", None, [(0.0, 60.0)]),
    ("what was there 5 minutes ago", 600.0, [(299.0, 301.0)]),
    ("anything in the last 30 seconds?", 600.0, [(570.0, 600.0)]),
    ("at 95.5 s what colour was it", None, [(94.5, 96.5)]),
    ("around minute 3", None, [(180.0, 240.0)]),
    ("what is at 12:05-12:40", None, [(725.0, 760.0)]),
    ("When did the door open?", None, []),
    ("I waited 5 seconds, then what?", None, []),
])
def test_time_parser(question, now, expected):
    got = parse_time_ranges(question, now)
    assert len(got) == len(expected)  # pytest 9's approx takes no nested tuples: compare them flat
    assert [t for r in got for t in r] == pytest.approx([t for r in expected for t in r])


def test_parse_clock_units():
    assert parse_clock("1:02:03") == 3723 and parse_clock("2 min") == 120 and parse_clock("90s") == 90
    with pytest.raises(ValueError):
        parse_clock("soon")
