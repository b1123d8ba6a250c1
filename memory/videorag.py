"""Video RAG (AdaVideoRAG, ViG-RAG): sampled frames kept on disk, found by caption or time, encoded afresh per question.

`FrameStore` is the decision logic and the disk tier of the `videorag` policy: the frames of a patch are kept
(lossless, numpy's deflate-compressed .npz: no video library in memory/; inside memory.disk_budget, oldest first out) unless their pooled vision features are as alike
as `memory.frame_merge` to the last kept patch's (the sampling), with a journal to reload them. `pick_frames`
chooses a question's patches: those covering a time it names, then the frames of the notes nearest by embedding
(text questions go through the caption index: pooled vision features and question text share no space).
`FrameRAG` writes the captions (a NoteTaker) and answers from a fresh context of the prefix, the picked patches
(each with its original timestamp text) and the question; the stream's own KV is a sliding window.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from longwatch.backbone.choices import choice_ids, choice_table, score_choices
from longwatch.backbone.model import decode, prefill
from longwatch.memory.block import Block
from longwatch.memory.blockfiles import append_record, read_records, replace_records
from longwatch.memory.captions import NoteTaker
from longwatch.memory.engine import Answer, Evidence
from longwatch.memory.retrieval import parse_time_ranges, spread
from longwatch.memory.textmem import Picked

FRAMES_FILE = "frames.jsonl"


@dataclass
class Kept:
    """One patch's frames on disk."""

    block_id: int
    t_start: float
    t_end: float
    t_mid: float
    file: str
    nbytes: int
    feature: torch.Tensor
    """[dim] float32 unit row: the patch's pooled vision features (last layer's values, mean over its tokens)."""

    def as_dict(self) -> dict:
        return {"block_id": self.block_id, "t_start": self.t_start, "t_end": self.t_end, "t_mid": self.t_mid,
                "file": self.file, "nbytes": self.nbytes,
                "feature": base64.b64encode(self.feature.numpy().tobytes()).decode()}


class FrameStore:
    """Patches' frames as compressed .npz files in `folder` under a byte `budget`; see the module docstring."""

    def __init__(self, folder: str, budget: int, merge: float) -> None:
        self.folder, self.budget, self.merge = Path(folder), budget, merge
        self.folder.mkdir(parents=True, exist_ok=True)
        self.kept: list[Kept] = []
        self.bytes = self.peak = self.dropped = self.skipped = self._lines = 0

    def add(self, block_id: int, t_start: float, t_end: float, t_mid: float, frames: np.ndarray,
            feature: torch.Tensor) -> Kept | None:
        """Keep a patch's frames [2, H, W, 3] uint8 RGB, or None when they are as alike as `merge` to the last kept."""
        feature = torch.nn.functional.normalize(feature.detach().float().cpu().reshape(-1), dim=0)
        if self.kept and float(self.kept[-1].feature @ feature) >= self.merge:
            self.skipped += 1
            return None
        buf = io.BytesIO()
        np.savez_compressed(buf, frames=np.ascontiguousarray(frames, dtype=np.uint8))
        data = buf.getvalue()
        entry = Kept(block_id, t_start, t_end, t_mid, f"frames-{block_id:09d}.npz", 0, feature)
        # its file, its journal line and room for one stale line until the journal is compacted (_write)
        entry.nbytes = len(data) + 2 * len(json.dumps({"op": "put", "entry": entry.as_dict()})) + 64
        if entry.nbytes > self.budget:
            raise ValueError(f"memory.disk_budget: one patch's frames take {entry.nbytes} bytes (compressed, with their "
                             f"journal line), more than the "
                             f"disk budget of {self.budget}")
        while self.kept and self.bytes + entry.nbytes > self.budget:
            old = self.kept.pop(0)
            (self.folder / old.file).unlink(missing_ok=True)
            self.bytes -= old.nbytes
            self.dropped += 1
            self._write({"op": "drop", "block_id": old.block_id})
        tmp = self.folder / (entry.file + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, self.folder / entry.file)
        self.kept.append(entry)
        self.bytes += entry.nbytes
        self.peak = max(self.peak, self.bytes)
        self._write({"op": "put", "entry": entry.as_dict()})
        return entry

    def frames(self, entry: Kept) -> np.ndarray:
        """The two frames [2, H, W, 3] uint8 RGB of a kept patch, as they were given."""
        path = self.folder / entry.file
        if not path.is_file():
            raise FileNotFoundError(f"{path}: frames of block {entry.block_id} are missing")
        with np.load(path) as data:
            return data["frames"]

    def stats(self) -> dict:
        return {"patches": len(self.kept), "bytes": self.bytes, "peak": self.peak, "budget": self.budget,
                "dropped": self.dropped, "skipped_alike": self.skipped}

    def _write(self, record: dict) -> None:
        """Append to the journal; past two lines per kept patch it is rewritten with one (stale lines stay bounded)."""
        append_record(self.folder / FRAMES_FILE, record)
        self._lines += 1
        if self._lines > 2 * len(self.kept) + 8:
            self.save(str(self.folder))

    def save(self, folder: str) -> None:
        """Copy the kept frames and a fresh journal to `folder` (the journal swapped in last)."""
        dest = Path(folder)
        dest.mkdir(parents=True, exist_ok=True)
        if dest.resolve() != self.folder.resolve():
            for e in self.kept:
                shutil.copyfile(self.folder / e.file, dest / e.file)
        replace_records(dest / FRAMES_FILE, [{"op": "put", "entry": e.as_dict()} for e in self.kept])
        if dest.resolve() == self.folder.resolve():
            self._lines = len(self.kept)

    def load(self) -> None:
        """Replay the folder's journal (a torn last line and entries whose file is gone are skipped)."""
        kept: dict[int, Kept] = {}
        for r in read_records(self.folder / FRAMES_FILE):
            if r.get("op") == "put":
                d = r["entry"]
                feature = torch.frombuffer(bytearray(base64.b64decode(d["feature"])), dtype=torch.float32)
                kept[d["block_id"]] = Kept(d["block_id"], d["t_start"], d["t_end"], d["t_mid"], d["file"],
                                           d["nbytes"], feature)
            elif r.get("op") == "drop":
                kept.pop(r["block_id"], None)
        self.kept = [kept[i] for i in sorted(kept) if (self.folder / kept[i].file).is_file()]
        while self.kept and sum(e.nbytes for e in self.kept) > self.budget:
            self.kept.pop(0)
            self.dropped += 1
        self.bytes = sum(e.nbytes for e in self.kept)
        self.peak = max(self.peak, self.bytes)


@dataclass(frozen=True)
class Frame:
    entry: Kept
    reason: str
    """'time' (covers a time the question names) or 'retrieved' (frames of a note found by its caption)."""
    score: float | None = None


def pick_frames(kept: list[Kept], notes: list[Picked], ranges: list[tuple[float, float]], time_k: int, k: int,
                until: float | None = None, per_note: int = 2) -> list[Frame]:
    """A question's patches, in time order: the newest (what is on screen now), those covering each named range
    (at most `time_k`, evenly spread), then for each note in its retrieval order the first and last kept patch
    inside it (at most `per_note`), up to `k` more. `until` hides patches starting at or after it."""
    seen = [e for e in kept if until is None or e.t_start < until]
    timed: list[Kept] = []
    for t0, t1 in ranges:
        timed += [e for e in seen if e.t_start <= t1 and t0 < e.t_end and e not in timed]
    ids = set(spread([e.block_id for e in timed], time_k))
    out = [Frame(e, "time") for e in timed if e.block_id in ids]
    taken = set(ids)
    more = 0
    for p in notes:
        inside = [e for e in seen if p.note.t_start <= e.t_start < p.note.t_end and e.block_id not in taken]
        for e in spread([x.block_id for x in inside], per_note):
            if more < k:
                entry = next(x for x in inside if x.block_id == e)
                out.append(Frame(entry, "retrieved", p.score))
                taken.add(e)
                more += 1
    if seen and seen[-1].block_id not in taken:
        out.append(Frame(seen[-1], "window"))
    return sorted(out, key=lambda f: f.entry.t_start)


class FrameRAG(NoteTaker):
    """Captions (as NoteTaker) plus the FrameStore; answers from a fresh context of the picked patches."""

    def __init__(self, *args: Any, frames: FrameStore, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.frames = frames

    def after_block(self, block: Block, patch: Any = None) -> None:
        super().after_block(block, patch)
        if patch is None:
            return
        _, kv = self.answerer.store.export(block)
        feature = kv[-1, 1, :, block.n_head: block.n_head + block.n_vis].float().mean(1).reshape(-1)
        self.frames.add(block.id, block.t_start, block.t_end, block.t_mid, np.asarray(patch.frames), feature)

    def stats(self) -> dict:
        return dict(super().stats(), frames=self.frames.stats())

    def ask(self, question: str, now: float | None, until: float | None, **kw: Any) -> Answer:
        store, bb, cfg = self.answerer.store, self.bb, self.cfg
        self.answerer.check(question, until)
        picks = None if kw.get("choices") is None else choice_ids(bb.layout, kw["choices"], cfg.answer_tokens // 2)
        t0 = time.perf_counter()
        with store.lock:
            t_last, size = store.state.t_last, store.state.size
        now = (t_last if until is None else min(t_last, until)) if now is None else now
        query = self.embed([question.strip()])[0] if cfg.retrieve_blocks > 0 else None
        notes = self.notes.pick(query, len(self.notes.notes), [], 0, until)
        chosen = pick_frames(self.frames.kept, notes, parse_time_ranges(question, now), cfg.time_blocks,
                             cfg.retrieve_blocks, until)
        if not chosen:
            return self.answerer.ask(question, window_only=True, until=until, now=now, **kw)
        qseg = bb.layout.question(question.strip())
        segs = [bb.layout.prefix()] + [bb.patch_segment(self.frames.frames(f.entry), f.entry.t_start, f.entry.t_end,
                                                        tuple(size), f.entry.t_mid) for f in chosen] + [qseg]
        t_ret = time.perf_counter() - t0
        cache = bb.new_cache()
        with bb.lock:
            r = prefill(bb.model, cache, segs, 0)
        t_pre = time.perf_counter() - t0 - t_ret
        samp = kw.get("sampling") or bb.sampling
        evidence = [Evidence(f.entry.block_id, f.entry.t_start, f.entry.t_end, f.reason, f.score) for f in chosen]
        if picks is not None:
            return self._pick(list(kw["choices"]), picks, cache, r, samp, evidence, kw.get("on_text"), t_ret, t_pre,
                              len(qseg))
        samp = dataclasses.replace(samp, max_new_tokens=min(samp.max_new_tokens, cfg.answer_tokens - len(qseg)))
        out = decode(bb.model, cache, r.logits[-1], r.next_position, bb.tokenizer, bb.layout.stop_ids, samp,
                     kw.get("on_text"), kw.get("keep_logits", False), kw.get("should_stop"), None, bb.lock)
        return Answer(text=out.text, token_ids=out.token_ids, ttft_s=t_ret + t_pre + out.first_token_s, prefill_s=t_pre,
                      decode_s=out.decode_s, retrieval_s=t_ret, evidence=evidence, memory={}, stopped=out.stopped,
                      logits=out.logits, question_tokens=len(qseg), context_tokens=cache.length - len(qseg))

    def _pick(self, choices: list[str], picks: list[list[int]], cache: Any, r: Any, samp: Any, evidence: list[Evidence],
              on_text: Any, t_ret: float, t_pre: float, q_tokens: int) -> Answer:
        """One of `choices` (token ids `picks`) over the retrieved frames' cache (see Answerer.ask's `choices`)."""
        bb = self.bb
        res = score_choices(bb.model, cache, r.logits[-1], r.next_position, picks, bb.layout.im_end, samp, None, bb.lock)
        text = choices[res.index].strip()
        if on_text is not None:
            on_text(text)
        return Answer(text=text, token_ids=picks[res.index], ttft_s=t_ret + t_pre + res.seconds, prefill_s=t_pre,
                      decode_s=res.seconds, retrieval_s=t_ret, evidence=evidence, memory={}, stopped=True,
                      question_tokens=q_tokens, context_tokens=cache.length - q_tokens, choices=choice_table(choices, res))
