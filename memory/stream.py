"""MemoryStream: one stream's bounded KV memory, the public face of three parts that each own one thing.

- `BlockStore` (memory/store.py): blocks, tiers (device, host, disk), the retrieval index, byte
  accounting; the only code that moves, compresses or evicts a block.
- `Encoder` (memory/engine.py): a temporal patch -> its forward -> a block in the store; the policy's
  window decisions.
- `Answerer` (memory/engine.py): a question -> retrieval -> the question's cache -> decoded answer.
- `NoteTaker` (memory/captions.py), streamchat only: captions into a text memory, questions answered from it.

This file only builds them and forwards the public API (ingest, ask, stats, rebase, save, load, close).
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from longwatch.backbone.cache import KVCache
from longwatch.backbone.model import Backbone, Sampling
from longwatch.ingest.patches import TemporalPatch
from longwatch.memory.block import Block
from longwatch.memory.captions import NoteTaker, make_embedder
from longwatch.memory.config import MemoryConfig
from longwatch.memory.engine import Answer, Answerer, Encoder, Evidence, YesNo
from longwatch.memory.persist import Journal, check_saved, header, snapshot
from longwatch.memory.policies import make_policy
from longwatch.memory.retrieval import make_index
from longwatch.memory.store import BlockStore
from longwatch.memory.textmem import TextMemory
from longwatch.memory.videorag import FrameRAG, FrameStore
from longwatch.memory.tiers import DiskTier, HostTier


def _disk_folder(cfg: MemoryConfig, stream_id: str, memory_dir: str | None) -> tuple[str | None, Any]:
    """The disk tier's folder and the scratch TemporaryDirectory to clean up (or None)."""
    if memory_dir:
        return memory_dir, None
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", stream_id) or "stream"  # ids like "bench/video/policy" are not paths
    if cfg.disk_dir:  # one folder per stream, so streams sharing a disk_dir never touch each other's files
        return str(Path(cfg.disk_dir) / name), None
    if cfg.disk_budget > 0:
        scratch = tempfile.TemporaryDirectory(prefix=f"longwatch-{name}-")
        return scratch.name, scratch
    return None, None


class MemoryStream:
    """A BlockStore with an Encoder and an Answerer over it; see the module docstring."""

    def __init__(self, backbone: Backbone, cfg: MemoryConfig, stream_id: str = "default",
                 memory_dir: str | None = None, frame_size: tuple[int, int] | None = None) -> None:
        self.bb, self.cfg, self.stream_id = backbone, cfg, stream_id
        policy = make_policy(cfg)
        journal = Journal(memory_dir) if memory_dir else None
        folder, self._scratch = _disk_folder(cfg, stream_id, memory_dir)
        disk = DiskTier(cfg.disk_budget, folder, journal.files if journal else None) \
            if cfg.disk_budget > 0 else None
        host = HostTier(cfg.host_budget if cfg.policy != "full" else None, backbone.device.type == "cuda")
        d = backbone.dims
        index = make_index(cfg.index, d.num_layers, d.kv_heads * d.head_dim, backbone.device) \
            if policy.retrieves else None
        self.store = BlockStore(backbone.new_cache(), policy, cfg, backbone.rotary_emb, host, disk, index,
                                threading.RLock(), journal, name=stream_id)
        self.encoder = Encoder(backbone, self.store, cfg, policy)
        self.answerer = Answerer(backbone, self.store, cfg, policy)
        if frame_size is not None:
            self.encoder.plan_for(frame_size)
        if journal is not None:
            journal.attach(self.store, self.encoder, header(backbone, cfg))
        self.skipped_on_load = journal.skipped if journal else 0
        """Torn blocks skipped when this stream's memory_dir was loaded."""
        self.notes: NoteTaker | None = None
        """streamchat's captions and text memory (None for the other policies)."""
        if policy.captions:
            embed = make_embedder(cfg.text_embedder, backbone)
            text = TextMemory(cfg.host_budget, cfg.note_merge, embed.name, memory_dir)
            if memory_dir:
                text.load(memory_dir, embed)
            if policy.frames:
                where = Path(memory_dir or folder) / "frames"
                store = FrameStore(str(where), cfg.disk_budget, cfg.frame_merge)
                store.load()
                self.notes = FrameRAG(backbone, self.answerer, cfg, text, embed, frames=store)
            else:
                self.notes = NoteTaker(backbone, self.answerer, cfg, text, embed)
            self.encoder.after_commit = self.notes.after_block

    @property
    def lock(self) -> threading.RLock:
        """This stream's own lock (see BlockStore.lock); the model lock is the backbone's."""
        return self.store.lock

    def ingest(self, patch: TemporalPatch) -> Block:
        """Encode one temporal patch into memory (see Encoder.encode)."""
        return self.encoder.encode(patch)

    def ask(self, question: str, on_text: Callable[[str], None] | None = None, now: float | None = None,
            keep_logits: bool = False, sampling: Sampling | None = None,
            should_stop: Callable[[], bool] | None = None, until: float | None = None,
            window_only: bool = False, copy_limit: int | None = None, choices: Sequence[str] | None = None) -> Answer:
        """Answer from memory; the stream is unchanged afterwards (see Answerer.ask, also for `copy_limit` and
        `choices`; streamchat: NoteTaker.ask, from its notes and the window)."""
        if self.notes is not None and not window_only:
            ans = self.notes.ask(question, now, until, on_text=on_text, keep_logits=keep_logits, sampling=sampling,
                                 should_stop=should_stop, copy_limit=copy_limit, choices=choices)
            return dataclasses.replace(ans, memory=self.stats())
        return self.answerer.ask(question, on_text, now, keep_logits, sampling, should_stop, until, window_only,
                                 copy_limit, choices)

    def check_question(self, question: str, until: float | None = None) -> None:
        """Raise ValueError with the message `ask` would give if `question` cannot be asked now (no model call)."""
        self.answerer.check(question, until)

    def yes_no(self, condition: str) -> YesNo:
        """P(Yes) for a yes/no condition about the newest patches, at a bounded cost (see Answerer.yes_no)."""
        return self.answerer.yes_no(condition)

    def stats(self) -> dict:
        """Tier bytes, peaks, budgets and block counts; safe from any thread (see BlockStore.stats). streamchat and
        videorag: notes count in the host tier, videorag's frames in the disk tier; `text`, `frames` detail them."""
        stats = self.store.stats()
        if self.notes is None:
            return stats
        text = self.notes.stats()
        frames = text.pop("frames", None)
        tiers = dict(stats["tiers"])
        for tier, part in (("host", text), ("disk", frames)):  # each is the only thing its policy keeps there
            if part is not None:
                t = tiers[tier]
                tiers[tier] = dict(t, bytes=t.get("bytes", 0) + part["bytes"], peak=t.get("peak", 0) + part["peak"])
        out = dict(stats, tiers=tiers, text=text)
        return out if frames is None else dict(out, frames=frames)

    def rebase(self, delta: int) -> None:
        self.store.rebase(delta)

    @property
    def cache(self) -> KVCache:
        return self.store.cache

    @property
    def blocks(self) -> Mapping[int, Block]:
        return self.store.blocks

    @property
    def next_position(self) -> int:
        return self.store.next_position

    @property
    def base(self) -> int:
        return self.store.base

    @property
    def journal(self) -> Journal | None:
        """The memory_dir journal (a compacting save swaps it for a fresh one)."""
        return self.store.journal

    def save(self, folder: str) -> None:
        """Write the whole memory to `folder` (a fresh journal); `MemoryStream.load` restores it."""
        snapshot(self.store, header(self.bb, self.cfg), folder)
        if self.notes is not None:
            self.notes.notes.save(folder)
        if isinstance(self.notes, FrameRAG):
            self.notes.frames.save(str(Path(folder) / "frames"))

    @classmethod
    def load(cls, backbone: Backbone, cfg: MemoryConfig, folder: str, stream_id: str = "default") -> MemoryStream:
        """Restore a stream saved with `save` or journaled with memory_dir (torn blocks skipped, logged)."""
        check_saved(folder)
        return cls(backbone, cfg, stream_id=stream_id, memory_dir=folder)

    def close(self) -> None:
        """Finish the journal (memory_dir) or delete the offloaded blocks (no memory_dir: they were scratch)."""
        if self.journal:
            self.journal.close(self.store, header(self.bb, self.cfg))
        self.store.close()
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None


__all__ = ["Answer", "Evidence", "MemoryStream", "YesNo"]
