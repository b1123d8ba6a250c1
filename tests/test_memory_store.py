"""The block store and the policy decisions it carries out, on made-up tensors: no model, no tokenizer.

Each test builds a BlockStore over a small CPU KVCache (2 layers, 2 KV heads, head_dim 8), adds
blocks of random K/V and checks what a user relies on: no tier over its budget, coldest-first
eviction, compression that keeps the timestamp text, exact re-basing, answers that leave the store as
it was, and a save/restore round trip.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from longwatch.backbone.cache import KVCache
from longwatch.backbone.inputs import apply_shift, shift_cos_sin
from longwatch.memory.block import DEVICE, DISK, HOST, MEMORY, Block, DevicePlan, placed
from longwatch.memory.config import MemoryConfig
from longwatch.memory.block import placement
from longwatch.memory.engine import evidence_of
from longwatch.memory.policies import Selection, leaving_window, make_policy
from longwatch.memory.retrieval import TorchIndex
from longwatch.memory.store import BlockStore
from longwatch.memory.tiers import DiskTier, HostTier

LAYERS, HEADS, DIM = 2, 2, 8
HEAD, VIS, TAIL = 3, 6, 1  # timestamp text + <|vision_start|>, vision tokens, <|vision_end|>
TOKENS = HEAD + VIS + TAIL
BLOCK_BYTES = LAYERS * 2 * HEADS * TOKENS * DIM * 4
ROTARY = SimpleNamespace(inv_freq=1.0 / (10000 ** (torch.arange(0, DIM, 2).float() / DIM)), attention_scaling=1.0)


def _store(policy: str, host: int | None = None, disk: int = 0, folder=None, memory_tokens: int = 0,
           **kw) -> BlockStore:
    cfg = MemoryConfig(policy=policy, **kw)
    cache = KVCache(LAYERS, HEADS, DIM, torch.float32, "cpu")
    pol = make_policy(cfg)
    index = TorchIndex(LAYERS, HEADS * DIM) if pol.retrieves else None
    store = BlockStore(cache, pol, cfg, ROTARY, HostTier(host, pin=False),
                       DiskTier(disk, folder) if disk else None, index)
    store.set_plan(DevicePlan(cache.bytes_per_token, TOKENS, 10_000, 0, memory_tokens, 0), (32, 32))
    return store


def _add(store: BlockStore, seed: int, sink: bool = False) -> tuple[Block, torch.Tensor]:
    """A patch block of random K/V written at the end of the cache; returns it and its kv."""
    st = store.state
    kv = torch.randn(LAYERS, 2, HEADS, TOKENS, DIM, generator=torch.Generator().manual_seed(seed))
    block = Block(id=st.next_id, kind="patch", t_start=float(st.next_id), t_end=st.next_id + 1.0,
                  t_mid=st.next_id + 0.5, pos_start=st.base + st.next_position, span=TOKENS, n_head=HEAD,
                  n_vis=VIS, n_tail=TAIL, n_vis_orig=VIS, is_sink=sink, rot_base=st.base)
    store.adopt(block, kv)
    return block, kv


def test_offload_demotes_coldest_to_disk_then_evicts_coldest(tmp_path):
    store = _store("rekv", host=2 * BLOCK_BYTES, disk=2 * BLOCK_BYTES, folder=tmp_path)
    blocks = [_add(store, i)[0] for i in range(6)]
    for b in blocks[:5]:
        store.offload(b)
        t = store.stats()["tiers"]
        assert t["host"]["bytes"] <= 2 * BLOCK_BYTES and t["disk"]["bytes"] <= 2 * BLOCK_BYTES
    # host keeps the newest two; 0, 1 and 2 went to disk in that order; the full disk evicted 0 first
    assert [b.tier for b in blocks] == ["evicted", DISK, DISK, HOST, HOST, DEVICE]
    assert sorted(store.blocks) == [1, 2, 3, 4, 5]
    assert store.stats()["evicted"] == 1 and len(store.index) == 4
    assert store.cache.length == TOKENS  # only block 5 is left on the device


def test_host_order_is_least_recently_used():
    store = _store("rekv", host=2 * BLOCK_BYTES)
    blocks = [_add(store, i)[0] for i in range(4)]
    store.offload(blocks[0])
    store.offload(blocks[1])
    with store.transient():
        store.bring_in(blocks[0], None)  # 0 was used by an answer: 1 is now the coldest
    store.offload(blocks[2])
    assert blocks[1].tier == "evicted" and blocks[0].tier == HOST  # no disk tier: the coldest goes


def test_drop_removes_exactly_that_blocks_tokens():
    store = _store("sliding")
    (a, kva), (b, _), (c, kvc) = (_add(store, i) for i in range(3))
    store.drop(b)
    assert [x.id for x in store.device_blocks] == [0, 2] and b.id not in store.blocks
    assert torch.equal(store.cache.read(0, 2 * TOKENS), torch.cat([kva, kvc], dim=3))


def test_compress_keeps_text_and_the_best_tokens_and_stays_in_budget():
    budget = 40
    store = _store("infinipot", memory_tokens=budget, compress_ratio=0.5)
    for i in range(12):
        block, kv = _add(store, i)
        assert block.scores is not None and block.scores.shape == (LAYERS, VIS)  # scored at ingest
        scores = block.scores.clone()
        store.compress(block)
        stored = [b for b in store.blocks.values() if b.tier == MEMORY]
        assert sum(b.n_tokens for b in stored) <= budget  # the compressed store never exceeds its budget
        if i == 0:
            assert block.n_vis == VIS // 2 and block.n_head == HEAD and block.n_tail == TAIL
            with store.transient() as cache:
                store.bring_in(block, None)
                got = cache.read(0, block.n_tokens)
            assert torch.equal(got[:, :, :, :HEAD], kv[:, :, :, :HEAD])  # timestamp text kept whole
            best = torch.topk(scores, VIS // 2, dim=1).indices.sort(dim=1).values
            assert torch.equal(block.kept, best)
            for layer in range(LAYERS):
                assert torch.equal(got[layer, :, :, HEAD: HEAD + 3], kv[layer, :, :, HEAD + best[layer]])
    assert store.cache.length == 0 and store.stats()["evicted"] > 0
    oldest = min(b.id for b in store.blocks.values())
    assert oldest > 0  # when even the text does not fit, the oldest blocks go first


def test_streammem_scores_leaving_blocks_with_the_given_scorer():
    store = _store("streammem", memory_tokens=100, compress_ratio=0.5)
    block, kv = _add(store, 0)
    seen = []

    def scorer(keys):
        seen.append(keys.shape)
        return torch.arange(VIS, dtype=torch.float32).expand(LAYERS, VIS)  # the last tokens are best

    store.compress(block, scorer)
    assert seen == [(LAYERS, HEADS, VIS, DIM)]
    assert block.kept[0].tolist() == [3, 4, 5] and block.n_proto == 1  # plus the frame's prototype token
    assert block.n_tokens == HEAD + 3 + TAIL + 1


def test_rebase_rotates_device_keys_and_stored_blocks_come_back_at_their_position():
    store = _store("rekv", host=10 * BLOCK_BYTES)
    (a, kva), (_, kvb) = _add(store, 0), _add(store, 1)
    store.offload(a)
    store.rebase(100)
    assert store.base == 100 and store.next_position == 2 * TOKENS - 100
    cos, sin = shift_cos_sin(ROTARY, -100, torch.float32, "cpu")
    now = store.cache.read(0, TOKENS)
    assert torch.allclose(now[:, 0], apply_shift(kvb[:, 0], cos, sin), atol=1e-5)
    assert torch.equal(now[:, 1], kvb[:, 1])  # values carry no position
    with store.transient() as cache:
        store.bring_in(a, None)
        back = cache.read(TOKENS, 2 * TOKENS)
    assert torch.allclose(back[:, 0], apply_shift(kva[:, 0], cos, sin), atol=1e-5)
    assert store.cache.length == TOKENS  # the answer's blocks were truncated away


def test_placed_rotation_is_exact_and_composes():
    kv = torch.randn(LAYERS, 2, HEADS, TOKENS, DIM)
    block = Block(id=0, kind="patch", t_start=0, t_end=1, t_mid=0.5, pos_start=500, span=TOKENS, n_head=HEAD,
                  n_vis=VIS, n_tail=TAIL, rot_base=0)
    assert placed(kv, block, 0, None, ROTARY) is kv  # already where it belongs: no copy
    there = placed(kv, block, 0, 20, ROTARY)  # from 500 to 20
    back = placed(there, dataclasses.replace(block, rot_base=480), 0, None, ROTARY)  # now stored for 20
    assert torch.allclose(back, kv, atol=1e-4)


def test_adopt_rejects_a_block_at_the_wrong_position():
    store = _store("sliding")
    _add(store, 0)
    bad = Block(id=1, kind="patch", t_start=1, t_end=2, t_mid=1.5, pos_start=0, span=TOKENS, n_head=HEAD,
                n_vis=VIS, n_tail=TAIL)
    with pytest.raises(ValueError, match="starts at 0"):
        store.adopt(bad, torch.zeros(LAYERS, 2, HEADS, TOKENS, DIM))


def test_visible_mask_hides_exactly_the_named_blocks():
    store = _store("sliding")
    blocks = [_add(store, i)[0] for i in range(3)]
    mask = store.visible_mask([blocks[1]])
    assert mask.tolist() == [True] * TOKENS + [False] * TOKENS + [True] * TOKENS
    assert store.visible_mask([]) is None


def test_export_and_restore_round_trip(tmp_path):
    store = _store("rekv", host=BLOCK_BYTES, disk=4 * BLOCK_BYTES, folder=tmp_path / "a")
    pairs = [_add(store, i) for i in range(4)]
    for b, _ in pairs[:3]:
        store.offload(b)
    store.rebase(7)
    again = _store("rekv", host=BLOCK_BYTES, disk=4 * BLOCK_BYTES, folder=tmp_path / "b")
    again.restore_state(store.state.as_dict())
    for b in sorted(store.blocks.values(), key=lambda b: b.id):
        copy, kv = store.export(b)
        assert again.restore(dataclasses.replace(copy), kv.clone())
    assert again.state == store.state
    assert {i: b.tier for i, b in again.blocks.items()} == {i: b.tier for i, b in store.blocks.items()}
    assert torch.equal(again.cache.read(0, TOKENS), store.cache.read(0, TOKENS))
    with store.transient() as c1, again.transient() as c2:
        for s in (store, again):
            for b in sorted((b for b in s.blocks.values() if b.tier != DEVICE), key=lambda b: b.id):
                s.bring_in(b, None)
        assert torch.allclose(c1.read(0, c1.length), c2.read(0, c2.length), atol=1e-6)


def test_window_decision_and_placement_are_plain_functions():
    blocks = [Block(id=i, kind="patch", t_start=i, t_end=i + 1, t_mid=i + 0.5, pos_start=10 * i, span=10,
                    n_head=HEAD, n_vis=VIS, n_tail=TAIL) for i in range(6)]
    assert [b.id for b in leaving_window(blocks, 4)] == [0, 1]  # oldest first
    assert leaving_window(blocks, 8) == [] and leaving_window(blocks, None) == []  # full keeps all
    keep, contiguous = MemoryConfig(positions="keep"), MemoryConfig(positions="contiguous")
    assert placement(blocks[:2], blocks[4:], 60, 0, keep) == [None, None]
    assert placement(blocks[:2], blocks[4:], 60, 0, contiguous) == [20, 30]  # packed just before the window
    ev = evidence_of(tuple(blocks[4:]), [Selection(1, "retrieved", 0.5)], {b.id: b for b in blocks})
    assert [(e.block_id, e.reason) for e in ev] == [(1, "retrieved"), (4, "window"), (5, "window")]
