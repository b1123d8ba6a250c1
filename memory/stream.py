"""MemoryStream: ingest temporal patches into bounded KV memory and answer questions from it.

Split by concern: this file ingests and applies the policy; memory/movement.py moves blocks between
tiers, memory/compression.py compresses on the device, memory/answer.py answers questions.

One stream = one KV cache on the device (sinks + recent window), a device store of compressed blocks
(infinipot, streammem), host and disk tiers for offloaded blocks, a retrieval index, and a policy that makes the decisions
(memory/policies). Positions are explicit everywhere: `next_position` is where the next segment
starts in model coordinates, `base` is how far the stream has been re-based (absolute = model + base).
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path

import torch

from longwatch.backbone.hooks import QKCapture
from longwatch.backbone.model import Backbone
from longwatch.backbone.prefill import prefill
from longwatch.backbone.preprocess import vision_tokens
from longwatch.backbone.rope import apply_shift, shift_cos_sin
from longwatch.memory.answer import Answer, Answering, Evidence
from longwatch.memory.block import Block
from longwatch.memory.budget import DevicePlan, plan_device
from longwatch.memory.compression import Compression
from longwatch.memory.config import MemoryConfig
from longwatch.memory.device import DeviceRegion, rotate_kv
from longwatch.memory.index import make_index
from longwatch.memory.movement import TierMoves
from longwatch.memory.policies import Exit, make_policy
from longwatch.memory.retrieval import block_summary
from longwatch.memory.tiers import DiskTier, HostTier

log = logging.getLogger(__name__)


class MemoryStream(TierMoves, Compression, Answering):
    def __init__(self, backbone: Backbone, cfg: MemoryConfig, stream_id: str = "default",
                 memory_dir: str | None = None, frame_size: tuple[int, int] | None = None) -> None:
        self.bb, self.cfg, self.stream_id = backbone, cfg, stream_id
        self.policy = make_policy(cfg)
        self.bpt = backbone.dims.bytes_per_token
        self.prefix_segment = backbone.layout.prefix()
        self.plan: DevicePlan | None = None
        self.size: tuple[int, int] | None = None
        if frame_size is not None:
            self._plan(frame_size)
        self.cache = backbone.new_cache(self.plan.capacity_tokens if self.plan else None)
        self.region = DeviceRegion(self.cache)
        self.blocks: dict[int, Block] = {}
        self.next_position, self.base, self.next_id, self.tick = 0, 0, 0, 0
        self.patches, self.t_last, self.rebases, self.evicted = 0, 0.0, 0, 0
        self.device_peak = 0
        self.memstore: dict[int, torch.Tensor] = {}
        """Compressed blocks (infinipot, streammem) on the device, outside the cache."""
        self._last_stats: dict | None = None
        pin = backbone.device.type == "cuda"
        self.host = HostTier(cfg.host_budget if self._bounded else None, pin)
        self._tmp = None
        self.journal = None
        if memory_dir:
            from longwatch.memory.persist import Journal

            self.journal = Journal(memory_dir)
            disk_folder = memory_dir
        else:
            if not cfg.disk_dir and cfg.disk_budget > 0:
                self._tmp = tempfile.TemporaryDirectory(prefix=f"longwatch-{stream_id}-")
            # one folder per stream, so streams sharing a disk_dir never touch each other's files
            safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", stream_id) or "stream"
            disk_folder = str(Path(cfg.disk_dir) / safe) if cfg.disk_dir else (self._tmp.name if self._tmp else None)
        self.disk = DiskTier(cfg.disk_budget, disk_folder, self.journal.files if self.journal else None) \
            if cfg.disk_budget > 0 else None
        text = backbone.model.config.text_config
        self.index = make_index(cfg.index, text.num_hidden_layers, backbone.dims.kv_heads * backbone.dims.head_dim,
                                backbone.device) if self.policy.retrieves else None
        if self.journal is not None:
            self.journal.attach(self)

    # ---------------------------------------------------------------- setup
    @property
    def _bounded(self) -> bool:
        return self.cfg.policy != "full"

    def _plan(self, size: tuple[int, int]) -> None:
        plan = plan_device(self.cfg, self.bpt, vision_tokens(size), len(self.prefix_segment), self.bb.name)
        if self.plan is not None and self.size != size:
            raise ValueError(f"stream frame size changed from {self.size} to {size}")
        self.plan, self.size = plan, size
        if hasattr(self, "cache") and self.cache.max_tokens != plan.capacity_tokens:
            self.cache.set_max_tokens(plan.capacity_tokens)

    def _start(self) -> None:
        seg = self.prefix_segment
        r = prefill(self.bb.model, self.cache, [seg], self.next_position)
        block = Block(id=-1, kind="prefix", t_start=0.0, t_end=0.0, t_mid=0.0, pos_start=self.base + self.next_position,
                      span=seg.span, n_head=len(seg), n_vis=0, n_tail=0, is_sink=True, rot_base=self.base)
        self.next_position = r.next_position
        self.region.adopt_tail(block)
        self.blocks[-1] = block
        if self.journal:
            self.journal.put(block, self.region.read(block), self)

    # ---------------------------------------------------------------- ingest
    def ingest(self, patch) -> Block:
        """Encode one temporal patch (ingest.types.TemporalPatch) attending to sinks + window; then apply the policy."""
        with self.bb.lock:
            return self._ingest(patch)

    def _ingest(self, patch) -> Block:
        seg = self._prepare(patch)
        with QKCapture(self.bb.model, keys=self._wants_prerope) as cap:
            r = prefill(self.bb.model, self.cache, [seg], self.next_position, None)
        return self._commit(patch, seg, r.next_position, cap.keys if self._wants_prerope else None)

    @property
    def _wants_prerope(self) -> bool:
        return self.policy.retrieves and self.cfg.retrieval_keys == "prerope"

    def _prepare(self, patch):
        """Everything before the patch's forward: frame-size plan, prompt prefix, segment, re-basing."""
        size = (patch.height, patch.width)
        if self.plan is None or self.size != size:
            self._plan(size)
        if not self.region.blocks:
            self._start()
        seg = self.bb.patch_segment(patch.frames, patch.t_start, patch.t_end, size, patch.t_mid)
        if self.next_position + seg.span > self.cfg.rebase_limit:
            self.rebase(self.next_position - self.cfg.rebase_limit // 2)
        return seg

    def _commit(self, patch, seg, next_position: int, prerope: list | None) -> Block:
        """After the forward wrote the patch's K/V at the end of the cache: record the block, apply the policy."""
        n_vis = int((seg.token_types == 2).sum())
        n_head = int(torch.nonzero(seg.token_types == 2)[0]) if n_vis else len(seg)
        _, gh, gw = seg.grid_thw
        block = Block(id=self.next_id, kind="patch", t_start=patch.t_start, t_end=patch.t_end, t_mid=patch.t_mid,
                      pos_start=self.base + self.next_position, span=seg.span, n_head=n_head, n_vis=n_vis,
                      n_tail=len(seg) - n_head - n_vis, grid=(gh // 2, gw // 2), n_vis_orig=n_vis,
                      is_sink=self.next_id < self.cfg.sink_blocks, rot_base=self.base, created=self.tick,
                      last_used=self.tick, meta={"gap_before": getattr(patch, "gap_before", 0.0)})
        self.next_id += 1
        self.tick += 1
        self.next_position = next_position
        self.region.adopt_tail(block)
        self.blocks[block.id] = block
        self.patches += 1
        self.t_last = max(self.t_last, patch.t_end)
        if self.policy.retrieves:
            block.summary = self._summary(block, prerope)
        if self.policy.scores_at_ingest:
            self._score_new(block)
        self._track_device()
        if self.journal:
            self.journal.put(block, self.region.read(block), self)
        self._enforce_window()
        self._refresh_stats()
        return block

    def _summary(self, block: Block, prerope: list | None) -> torch.Tensor:
        if prerope is not None:
            return block_summary([k for k in prerope])
        off = self.region.offset(block)
        keys = [self.cache.keys_view(i, off, off + block.n_tokens).transpose(0, 1) for i in range(self.cache.num_layers)]
        summary = block_summary(keys)
        # cached keys are rotated for model positions; store them in the absolute frame (see ask)
        cos, sin = shift_cos_sin(self.bb.rotary_emb, self.base, torch.float32, summary.device)
        d = self.bb.dims
        return apply_shift(summary.view(-1, d.kv_heads, d.head_dim), cos, sin).reshape(summary.shape)

    def _score_new(self, block: Block) -> None:
        keys, values = self.region.vision_kv(block)
        prev = [b for b in self.region.blocks if b.kind == "patch" and b is not block]
        prev_keys = None
        if prev and prev[-1].n_vis == block.n_vis and prev[-1].n_vis == prev[-1].n_vis_orig:
            prev_keys = self.region.vision_kv(prev[-1])[0]
        scores = self.policy.score_new(keys, values, prev_keys)
        if scores is not None:
            block.scores = scores.float().cpu()

    def _window(self) -> list[Block]:
        return [b for b in self.region.blocks if b.kind == "patch" and not b.is_sink]

    def _enforce_window(self) -> None:
        w = self.policy.window(self.cfg)
        if w is None:
            return
        window = self._window()
        while len(window) > w:
            self._exit(window.pop(0))

    def _exit(self, block: Block) -> None:
        action = self.policy.on_exit
        if action is Exit.KEEP:
            return
        if action is Exit.DROP:
            self.region.remove(block)
            self._evict(block)
        elif action is Exit.OFFLOAD:
            kv = self.region.remove(block)
            self._offload(block, kv)
        elif action is Exit.COMPRESS:
            self._to_memory(block, self.region.remove(block))
        self._track_device()

    # ---------------------------------------------------------------- positions
    def rebase(self, delta: int) -> None:
        """Shift every live position back by `delta` by rotating cached keys (exact: attention only
        sees position differences, and all live tokens move together)."""
        if delta <= 0:
            return
        cos, sin = shift_cos_sin(self.bb.rotary_emb, -delta, torch.float32, self.bb.device)
        self.region.rotate_all(cos, sin)
        self.next_position -= delta
        self.base += delta
        for b in self.region.blocks:
            b.rot_base = self.base
        self.rebases += 1
        log.info("stream %s re-based by %d positions (base %d)", self.stream_id, delta, self.base)
        if self.journal:
            self.journal.rebase(self)

    def _placed(self, block: Block, kv: torch.Tensor, target: int | None) -> torch.Tensor:
        """kv of a stored block rotated to model position `target` (None = its own position)."""
        phase = block.pos_start - block.rot_base
        goal = block.pos_start - self.base if target is None else target
        if goal == phase:
            return kv
        cos, sin = shift_cos_sin(self.bb.rotary_emb, goal - phase, torch.float32, kv.device)
        return rotate_kv(kv, cos, sin)

    # ---------------------------------------------------------------- reporting
    @property
    def device_bytes(self) -> int:
        """The device tier: the cache's allocation plus the compressed-memory store."""
        return self.cache.allocated_bytes + sum(t.numel() * t.element_size() for t in self.memstore.values())

    def _track_device(self) -> None:
        self.device_peak = max(self.device_peak, self.device_bytes)

    def stats(self) -> dict:
        """Tier bytes, peaks, budgets and block counts. Safe from any thread: while another thread
        holds the model (encoding or answering) it returns the snapshot taken after the last change."""
        if not self.bb.lock.acquire(blocking=False):
            return self._last_stats or self._empty_stats()
        try:
            self._last_stats = self._stats()
            return self._last_stats
        finally:
            self.bb.lock.release()

    def _refresh_stats(self) -> dict:
        self._last_stats = self._stats()
        return self._last_stats

    def _empty_stats(self) -> dict:
        zero = {"bytes": 0, "peak": 0, "budget": None, "blocks": 0}
        return {"policy": self.cfg.policy, "patches": 0, "t_last": 0.0, "evicted": 0, "rebases": 0,
                "tiers": {"device": dict(zero, live=0), "host": dict(zero), "disk": dict(zero)},
                "next_position": 0, "base": 0, "index": None, "plan": None}

    def _stats(self) -> dict:
        device_blocks = sum(1 for b in self.region.blocks if b.kind == "patch")
        tiers = {
            "device": {"bytes": self.device_bytes, "live": self.region.length * self.bpt,
                       "peak": self.device_peak, "budget": self.cfg.device_budget if self._bounded else None,
                       "blocks": device_blocks + len(self.memstore), "memory_blocks": len(self.memstore)},
            "host": self.host.stats.as_dict(),
            "disk": self.disk.stats.as_dict() if self.disk else {"bytes": 0, "peak": 0, "budget": 0, "blocks": 0},
        }
        return {"policy": self.cfg.policy, "patches": self.patches, "t_last": self.t_last, "tiers": tiers,
                "evicted": self.evicted, "rebases": self.rebases, "next_position": self.next_position,
                "base": self.base,
                "index": {"backend": self.index.name, "blocks": len(self.index), "bytes": self.index.nbytes}
                if self.index is not None else None,
                "plan": self.plan.as_dict() if self.plan else None}

    def save(self, folder: str) -> None:
        """Write the whole memory to `folder` (a fresh journal); `MemoryStream.load` restores it."""
        from longwatch.memory.persist import snapshot

        snapshot(self, folder)

    @classmethod
    def load(cls, backbone: Backbone, cfg: MemoryConfig, folder: str, stream_id: str = "default") -> "MemoryStream":
        """Restore a stream saved with `save` or journaled with memory_dir (torn blocks skipped, logged)."""
        from longwatch.memory.persist import restore

        return restore(cls, backbone, cfg, folder, stream_id)

    def close(self) -> None:
        """Finish the journal (memory_dir) or delete the offloaded blocks (no memory_dir: they were scratch)."""
        if self.journal:
            self.journal.close(self)
        elif self.disk is not None:
            for bid in self.disk.ids():
                self.disk.pop(bid)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


__all__ = ["Answer", "Evidence", "MemoryStream"]
