"""No tier ever exceeds its budget over a 5,000-patch stream, and impossible budgets fail at startup."""

from __future__ import annotations

import numpy as np
import pytest
from longwatch.ingest.patches import TemporalPatch
from longwatch.memory.config import MemoryConfig
from longwatch.memory.schema import ConfigError
from longwatch.memory.store import FIT_SLACK
from longwatch.memory.stream import MemoryStream

from tests.memory_fakes import fake_backbone

FRAMES = np.zeros((2, 32, 32, 3), dtype=np.uint8)  # one vision token per patch: fast


def _patch(i: int, frames: np.ndarray = FRAMES) -> TemporalPatch:
    return TemporalPatch(i, frames, (float(i), i + 0.5), float(i), i + 1.0)


@pytest.fixture(scope="module")
def fake():
    return fake_backbone()


def _compressed(ms: MemoryStream) -> list:
    return [b for b in ms.blocks.values() if b.tier == "memory"]


def _check(ms: MemoryStream, cfg: MemoryConfig) -> None:
    t = ms.stats()["tiers"]
    assert ms.cache.allocated_bytes <= cfg.device_budget
    assert t["device"]["peak"] <= cfg.device_budget
    assert t["host"]["bytes"] <= cfg.host_budget and t["host"]["peak"] <= cfg.host_budget
    assert t["disk"]["bytes"] <= cfg.disk_budget and t["disk"]["peak"] <= cfg.disk_budget


# 1,500 patches in the default run (the tiers fill within the first hundred); 5,000 behind -m slow (~35 s)
@pytest.mark.parametrize("n", [1500, pytest.param(5000, marks=pytest.mark.slow)])
@pytest.mark.parametrize("policy", ["sliding", "rekv", "infinipot", "streammem", "livevlm", "streamchat", "videorag"])
def test_no_tier_over_budget_across_a_long_stream(fake, policy, n, tmp_path):
    cfg = MemoryConfig(policy=policy, device_budget=400_000, host_budget=40_000, disk_budget=60_000,
                       disk_dir=str(tmp_path), window_blocks=3, retrieve_blocks=2, time_blocks=2, answer_tokens=32,
                       text_embedder="backbone")  # streamchat, videorag: the fake's captions end at once (notes: test_streamchat)
    ms = MemoryStream(fake, cfg)
    for i in range(n):
        ms.ingest(_patch(i))
        _check(ms, cfg)
        if i % 500 == 499:
            a = ms.ask(f"what happened at {i // 120}:{i % 60:02d}?")
            _check(ms, cfg)
            assert a.memory["patches"] == i + 1
    s = ms.stats()
    assert s["patches"] == n and s["evicted"] > n - 500
    if policy in ("rekv", "livevlm"):
        # the tiers stay full: one more block would not fit in either
        block_bytes = max(b.n_tokens for b in ms.blocks.values() if b.kind == "patch") * fake.dims.bytes_per_token
        assert s["tiers"]["host"]["bytes"] + block_bytes > cfg.host_budget
        assert s["tiers"]["disk"]["bytes"] + block_bytes > cfg.disk_budget
        assert len(list(tmp_path.iterdir())) > 0
    ms.close()


def test_livevlm_pages_merged_or_dropped_hold_the_same_bytes_within_budget(fake, tmp_path):
    """memory.page_merge changes what a page's kept tokens hold, never how many: at four vision tokens per patch
    (a page keeps one and merges the other three into it, or drops them) both modes stay within every budget
    with the same bytes in every tier, patch after patch."""
    frames = np.zeros((2, 64, 64, 3), dtype=np.uint8)
    streams, cfgs = {}, {}
    for merge in (True, False):
        cfgs[merge] = MemoryConfig(policy="livevlm", page_merge=merge, device_budget=400_000, host_budget=40_000,
                                   disk_budget=60_000, disk_dir=str(tmp_path / str(merge)), window_blocks=3,
                                   retrieve_blocks=2, time_blocks=2, answer_tokens=32)
        streams[merge] = MemoryStream(fake, cfgs[merge])
    assert streams[True].store.policy.merges and not streams[False].store.policy.merges
    for i in range(300):  # host and disk are full after ~10 patches
        for merge, ms in streams.items():
            ms.ingest(_patch(i, frames))
            _check(ms, cfgs[merge])
        tiers = [{k: t["bytes"] for k, t in ms.stats()["tiers"].items() if "bytes" in t} for ms in streams.values()]
        assert tiers[0] == tiers[1] and len(tiers[0]) == 3
    for merge, ms in streams.items():
        pages = [b for b in ms.blocks.values() if b.tier in ("host", "disk")]
        assert pages and all(b.n_vis == 1 and b.n_vis_orig == 4 for b in pages) and ms.stats()["evicted"] > 250
        assert ms.ask("what happened at 0:10?").memory["patches"] == 300
        _check(ms, cfgs[merge])
        ms.close()


@pytest.mark.parametrize("policy", ["infinipot", "streammem"])
def test_a_full_compressed_store_is_reallocated_with_slack_not_at_every_patch(fake, policy):
    cfg = MemoryConfig(policy=policy, device_budget=2_000_000, window_blocks=3, answer_tokens=32)
    ms = MemoryStream(fake, cfg)
    fits, first_full = [], None
    policy = ms.store.policy
    fit = policy.fit
    policy.fit = lambda blocks, budget: fits.append(budget) or fit(blocks, budget)
    budget = None
    for i in range(1500):
        ms.ingest(_patch(i))
        budget = ms.store.plan.memory_tokens
        assert sum(b.n_tokens for b in _compressed(ms)) <= budget
        if fits and first_full is None:
            first_full = i
    slack = int(budget * FIT_SLACK)
    block = max(b.n_tokens for b in _compressed(ms))
    assert first_full is not None and slack >= 4 * block  # the test's budget leaves room for several blocks
    # each re-allocation frees `slack` tokens, so the next one comes about slack / block patches later
    assert len(fits) <= (1500 - first_full) * block / slack + 1
    assert all(b <= budget - slack for b in fits)
    ms.close()


def test_full_is_unbounded_and_keeps_everything(fake):
    ms = MemoryStream(fake, MemoryConfig(policy="full", device_budget=1000))  # budgets do not apply to full
    for i in range(300):
        ms.ingest(_patch(i))
    assert ms.stats()["tiers"]["device"]["blocks"] == 300 and ms.stats()["tiers"]["device"]["budget"] is None


def test_positions_stay_bounded_by_rebasing(fake):
    cfg = MemoryConfig(policy="sliding", device_budget=300_000, window_blocks=3, answer_tokens=32, rebase_limit=4096)
    ms = MemoryStream(fake, cfg)
    for i in range(1000):  # ~13 positions per patch: passes 4096 three times
        ms.ingest(_patch(i))
        assert ms.next_position <= 4096
    assert ms.stats()["rebases"] >= 3 and ms.base > 0


@pytest.mark.parametrize("overrides,needle", [
    (dict(device_budget=10_000), "memory.device_budget: 9.8 KiB cannot hold"),
    (dict(window_blocks=50), "memory.window_blocks: a window of 50 blocks does not fit"),
    (dict(policy="rekv", host_budget=0, disk_budget=0), "memory.host_budget: rekv offloads"),
    (dict(policy="rekv", host_budget=1000), "memory.host_budget: 1000 B cannot hold one block"),
])
def test_impossible_budgets_fail_before_streaming(fake, overrides, needle):
    base = dict(policy="sliding", device_budget=400_000, window_blocks=3, answer_tokens=32, retrieve_blocks=2,
                time_blocks=2)
    base.update(overrides)
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")) as e:
        MemoryStream(fake, MemoryConfig(**base), frame_size=(32, 32))
    assert "minimum" in str(e.value) or "at least" in str(e.value) or "at most" in str(e.value)


@pytest.mark.parametrize("index", ["torch", "faiss"])
def test_index_and_summaries_count_against_their_tier(fake, index, tmp_path):
    """The retrieval index (on the device for torch, in host RAM for faiss on the CPU) and the device
    blocks' key summaries are bytes the stream holds: they count in their tier, and the tier stays in budget."""
    cfg = MemoryConfig(policy="rekv", index=index, device_budget=400_000, host_budget=40_000, disk_budget=60_000,
                       disk_dir=str(tmp_path), window_blocks=3, retrieve_blocks=2, time_blocks=2, answer_tokens=32)
    ms = MemoryStream(fake, cfg)
    for i in range(600):
        ms.ingest(_patch(i))
        _check(ms, cfg)
    s = ms.stats()
    idx = ms.store.index
    stored = sum(1 for b in ms.blocks.values() if b.tier in ("host", "disk"))
    assert s["index"]["blocks"] == stored > 0 and s["index"]["bytes"] == idx.nbytes >= stored * idx.entry_bytes
    kv = sum(b.n_tokens for b in ms.store.device_blocks) * fake.dims.bytes_per_token
    summaries = sum(b.summary.numel() * 4 for b in ms.store.device_blocks if b.summary is not None)
    assert summaries > 0 and all(b.summary is None for b in ms.blocks.values() if b.tier != "device")
    if index == "torch":
        assert s["tiers"]["device"]["bytes"] == ms.cache.allocated_bytes + summaries + idx.nbytes
        assert s["tiers"]["device"]["bytes"] > kv + idx.nbytes
        assert ms.store.plan.capacity_tokens * fake.dims.bytes_per_token + ms.store.plan.device_reserve <= cfg.device_budget
    else:
        host_kv = ms.store.host.stats.bytes  # the blocks alone
        assert s["tiers"]["host"]["index_bytes"] == idx.nbytes and s["tiers"]["host"]["bytes"] == host_kv + idx.nbytes
        assert ms.store.plan.host_reserve >= idx.nbytes
    ms.close()


def test_an_index_that_cannot_fit_host_ram_fails_at_start(fake):
    cfg = MemoryConfig(policy="rekv", index="faiss", device_budget=400_000, host_budget=2_000, disk_budget=4_000_000,
                       window_blocks=3, answer_tokens=32)
    with pytest.raises(ConfigError, match="memory.host_budget: the retrieval index lives in host RAM"):
        MemoryStream(fake, cfg).ingest(_patch(0))


def test_pinned_host_blocks_cost_their_rounded_allocation():
    from longwatch.memory.tiers import HostTier

    pinned, plain = HostTier(10_000, pin=True), HostTier(10_000, pin=False)
    assert [pinned.cost(n) for n in (1, 3000, 4096, 4097)] == [1, 4096, 4096, 8192]
    assert plain.cost(3000) == 3000


def test_a_stream_id_with_slashes_gets_a_scratch_disk_folder(fake):
    """eval names its streams "bench/video/policy": the disk tier's scratch folder must not take that as a path."""
    ms = MemoryStream(fake, MemoryConfig(policy="sliding", disk_budget=10**6, host_budget=40_000, device_budget=400_000,
                                         window_blocks=2, answer_tokens=32),
                      stream_id="annotations/needle_000/sliding")
    ms.ingest(_patch(0))
    ms.close()
