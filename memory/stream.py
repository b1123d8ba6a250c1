"""MemoryStream: ingest temporal patches into bounded KV memory and answer questions from it.

One stream = one KV cache on the device (sinks + compressed memory + recent window), host and disk
tiers for offloaded blocks, a retrieval index, and a policy that makes the decisions
(memory/policies). Positions are explicit everywhere: `next_position` is where the next segment
starts in model coordinates, `base` is how far the stream has been re-based (absolute = model + base).
"""

from __future__ import annotations

import logging
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from backbone.decode import DecodeResult, Sampling, decode
from backbone.hooks import QKCapture
from backbone.model import Backbone
from backbone.prefill import prefill
from backbone.preprocess import vision_tokens
from backbone.rope import apply_shift, rope_text, shift_cos_sin
from memory.block import DEVICE, DISK, EVICTED, HOST, Block
from memory.budget import DevicePlan, plan_device
from memory.config import MemoryConfig
from memory.device import DeviceRegion, compress_kv, rotate_kv
from memory.index import make_index
from memory.policies import Exit, Selection, make_policy
from memory.retrieval import block_summary, question_query, spread
from memory.tiers import DiskTier, HostTier
from memory.timeparse import parse_time_ranges

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evidence:
    block_id: int
    t_start: float
    t_end: float
    reason: str
    """'sink', 'memory' (compressed, on device), 'window', 'retrieved' or 'time'."""
    score: float | None = None


@dataclass
class Answer:
    text: str
    token_ids: list[int]
    ttft_s: float
    """Seconds from the question to its first answer token (retrieval + prefill + first sample)."""
    prefill_s: float
    decode_s: float
    retrieval_s: float
    evidence: list[Evidence]
    memory: dict
    stopped: bool
    logits: list[torch.Tensor] = field(default_factory=list)
    question_tokens: int = 0
    context_tokens: int = 0
    kept: dict[int, torch.Tensor | None] = field(default_factory=dict)
    """Blocks in the answer's context: id -> [layers, k] original vision indices kept (None = whole block)."""


class MemoryStream:
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
        pin = backbone.device.type == "cuda"
        self.host = HostTier(cfg.host_budget if self._bounded else None, pin)
        self._tmp = None
        self.journal = None
        if memory_dir:
            from memory.persist import Journal

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
            r = prefill(self.bb.model, self.cache, [seg], self.next_position)
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
        return [b for b in self.region.blocks if b.kind == "patch" and not b.is_sink and not b.meta.get("compressed")]

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
            self._compress(block, self.policy.keep_count(block.n_vis), first=True)
            self._fit_memory()
        self._track_device()

    # ---------------------------------------------------------------- tiers
    def _evict(self, block: Block) -> None:
        block.tier = EVICTED
        self.blocks.pop(block.id, None)
        if self.index is not None and block.summary is not None and block.meta.get("indexed"):
            self.index.remove(block.id)
        self.evicted += 1
        if self.journal:
            self.journal.drop(block)

    def _offload(self, block: Block, kv: torch.Tensor) -> None:
        nbytes = kv.numel() * kv.element_size()
        block.rot_base = self.base
        if self.index is not None and not block.meta.get("indexed"):
            self.index.add(block.id, block.summary)
            block.meta["indexed"] = True
        if self.host.enabled and self.host.can_ever_fit(nbytes):
            while not self.host.fits(nbytes):
                self._demote_host(self.blocks[self.host.coldest()])
            self.host.put(block.id, kv)
            block.tier = HOST
        else:
            self._to_disk(block, kv)
        if self.journal:
            self.journal.tier(block)

    def _demote_host(self, block: Block) -> None:
        kv = self.host.pop(block.id)
        self._to_disk(block, kv)
        if self.journal:
            self.journal.tier(block)

    def _to_disk(self, block: Block, kv: torch.Tensor) -> None:
        nbytes = kv.numel() * kv.element_size()
        if self.disk is None or not self.disk.can_ever_fit(nbytes):
            self._evict(block)
            return
        while not self.disk.fits(nbytes):
            old = self.blocks[self.disk.coldest()]
            self.disk.pop(old.id)
            self._evict(old)
        ref = self.journal.ref_for(block) if self.journal else None
        self.disk.put(block.id, kv, ref)
        block.tier = DISK

    def _load_stored(self, block: Block) -> torch.Tensor:
        if block.tier == HOST:
            self.host.touch(block.id)
            return self.host.get(block.id)
        if block.tier == DISK:
            self.disk.touch(block.id)
            return self.disk.get(block.id)
        raise KeyError(f"block {block.id} is {block.tier}")

    # ---------------------------------------------------------------- compression
    def _proxy_queries(self) -> torch.Tensor:
        """Post-RoPE queries of the template's generic turn opener run after the current cache:
        [layers, heads, tokens, head_dim]."""
        seg = self.bb.layout.question("")
        length = self.cache.length
        with QKCapture(self.bb.model, queries=True) as cap:
            prefill(self.bb.model, self.cache, [seg], self.next_position)
        self.cache.truncate(length)
        pos = torch.arange(self.next_position, self.next_position + len(seg))
        out = [rope_text(self.bb.rotary_emb, q, pos) for q in cap.queries]
        return torch.stack(out)

    def _compress(self, block: Block, k: int, first: bool = False) -> None:
        kv = self.region.read(block)
        keys = kv[:, 0, :, block.n_head: block.n_head + block.n_vis]
        if first and self.policy.wants_proxy:
            scores = self.policy.score_exit(keys, self._proxy_queries()).float().cpu()
        else:
            scores = block.scores if block.scores is not None else torch.zeros(kv.shape[0], block.n_vis)
        # a new prototype must not make the block longer: it takes one vision token's place
        add_proto = self.policy.prototype and not block.n_proto and block.n_vis >= 2
        k = min(k, block.n_vis - 1) if add_proto else min(k, block.n_vis)
        keep = self.policy.keep(scores, k)
        new = compress_kv(kv, block, keep, add_proto or bool(block.n_proto))
        self.region.replace(block, new)
        block.scores = torch.gather(scores, 1, keep)
        orig = block.kept if block.kept is not None else torch.arange(block.n_vis).expand(keep.shape[0], -1)
        block.kept = torch.gather(orig, 1, keep)
        block.n_vis = keep.shape[1]
        if add_proto:
            block.n_proto = 1
        block.meta["compressed"] = True
        block.rot_base = self.base
        if self.journal:
            self.journal.put(block, new, self)

    def _fit_memory(self) -> None:
        memory = [b for b in self.region.blocks if b.meta.get("compressed")]
        budget = self.plan.memory_tokens
        if sum(b.n_tokens for b in memory) <= budget:
            return
        counts = self.policy.fit(memory, budget)
        for b in memory:
            if b.id not in counts:
                self.region.remove(b)
                self._evict(b)
            elif counts[b.id] < b.n_vis:
                self._compress(b, counts[b.id])

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

    # ---------------------------------------------------------------- answering
    def _question_query(self, question_seg) -> torch.Tensor:
        length = self.cache.length
        with QKCapture(self.bb.model, queries=True) as cap:
            prefill(self.bb.model, self.cache, [question_seg], self.next_position)
        self.cache.truncate(length)
        queries = [q.float() for q in cap.queries]
        if self.cfg.retrieval_keys == "cached":  # rotate into the absolute frame of the summaries
            pos = torch.arange(len(question_seg)) + self.base + self.next_position
            rotated = []
            for q in queries:
                rows = [apply_shift(q[i], *shift_cos_sin(self.bb.rotary_emb, int(p), torch.float32, q.device))
                        for i, p in enumerate(pos.tolist())]
                rotated.append(torch.stack(rows))
            queries = rotated
        return question_query(queries, self.bb.dims.kv_heads)

    def _select(self, question: str, question_seg, now: float) -> list[Selection]:
        stored = [b for b in self.blocks.values() if b.tier in (HOST, DISK)]
        if not self.policy.retrieves or not stored:
            return []
        forced: list[int] = []
        for t0, t1 in parse_time_ranges(question, now):
            forced += [b.id for b in sorted(stored, key=lambda b: b.t_start) if b.covers(t0, t1) and b.id not in forced]
        forced = spread(forced, self.cfg.time_blocks)
        ids, scores = self.index.scores(self._question_query(question_seg))
        return self.policy.select(ids, scores, self.cfg.retrieve_blocks, forced)

    def ask(self, question: str, on_text: Callable[[str], None] | None = None, now: float | None = None,
            keep_logits: bool = False, sampling: Sampling | None = None,
            should_stop: Callable[[], bool] | None = None) -> Answer:
        """Answer `question` from memory; the stream is unchanged afterwards (question and answer are transient).

        `now` (seconds) anchors "5 minutes ago"; default: the newest ingested time. The model lock
        is held for the whole answer, so other streams sharing the backbone wait between tokens' turns.
        """
        with self.bb.lock:
            return self._ask(question, on_text, now, keep_logits, sampling, should_stop)

    def _ask(self, question, on_text, now, keep_logits, sampling, should_stop) -> Answer:
        if not question or not question.strip():
            raise ValueError("empty question")
        if not self.region.blocks:
            raise ValueError("no video has been ingested yet")
        t0 = time.perf_counter()
        now = self.t_last if now is None else now
        qseg = self.bb.layout.question(question.strip())
        if len(qseg) > self.cfg.answer_tokens // 2 and self._bounded:
            raise ValueError(f"question is {len(qseg)} tokens; at most {self.cfg.answer_tokens // 2} fit the answer reserve")
        length = self.cache.length
        try:
            selections = self._select(question, qseg, now)
            chosen = sorted(selections, key=lambda s: self.blocks[s.block_id].t_start)
            targets = self._targets([self.blocks[s.block_id] for s in chosen])
            for sel, target in zip(chosen, targets):
                block = self.blocks[sel.block_id]
                self.cache.append(self._placed(block, self._load_stored(block), target).to(self.cache.device))
                block.last_used = self.tick
            t_ret = time.perf_counter() - t0
            r = prefill(self.bb.model, self.cache, [qseg], self.next_position)
            t_pre = time.perf_counter() - t0 - t_ret
            context = self.cache.length - len(qseg)
            self._track_device()
            samp = sampling or self.bb.sampling
            if self._bounded:
                samp = Sampling(samp.temperature, samp.top_p, min(samp.max_new_tokens, self.cfg.answer_tokens - len(qseg)), samp.seed)
            out: DecodeResult = decode(self.bb.model, self.cache, r.logits[-1], r.next_position, self.bb.tokenizer,
                                       self.bb.layout.stop_ids, samp, on_text, keep_logits, should_stop)
            self._track_device()
        finally:
            self.cache.truncate(length)
        self.tick += 1
        evidence = self._evidence(selections)
        kept = {b.id: b.kept for b in self.region.blocks if b.kind == "patch"}
        kept.update({s.block_id: None for s in selections})
        return Answer(text=out.text, token_ids=out.token_ids, ttft_s=t_ret + t_pre + out.first_token_s,
                      prefill_s=t_pre, decode_s=out.decode_s, retrieval_s=t_ret, evidence=evidence,
                      memory=self.stats(), stopped=out.stopped, logits=out.logits, question_tokens=len(qseg),
                      context_tokens=context, kept=kept)

    def _targets(self, blocks: list[Block]) -> list[int | None]:
        """Model positions for retrieved blocks: their own (keep), or packed just before the window
        (contiguous, and for keep-mode blocks further back than rebase_limit)."""
        if not blocks:
            return []
        window = [b for b in self.region.blocks if b.kind == "patch"]
        anchor = (window[0].pos_start - self.base) if window else self.next_position
        far = self.next_position - self.cfg.rebase_limit
        if self.cfg.positions == "keep" and all(b.pos_start - self.base >= far for b in blocks):
            return [None] * len(blocks)
        out, pos = [], anchor - sum(b.span for b in blocks)
        for b in blocks:
            out.append(pos)
            pos += b.span
        return out

    def _evidence(self, selections: list[Selection]) -> list[Evidence]:
        ev = []
        for b in self.region.blocks:
            if b.kind != "patch":
                continue
            reason = "sink" if b.is_sink else "memory" if b.meta.get("compressed") else "window"
            ev.append(Evidence(b.id, b.t_start, b.t_end, reason))
        for s in selections:
            b = self.blocks[s.block_id]
            ev.append(Evidence(b.id, b.t_start, b.t_end, s.reason, s.score))
        return sorted(ev, key=lambda e: e.t_start)

    # ---------------------------------------------------------------- reporting
    def _track_device(self) -> None:
        self.device_peak = max(self.device_peak, self.cache.allocated_bytes)

    def stats(self) -> dict:
        device_blocks = sum(1 for b in self.region.blocks if b.kind == "patch")
        tiers = {
            "device": {"bytes": self.cache.allocated_bytes, "live": self.region.length * self.bpt,
                       "peak": self.device_peak, "budget": self.cfg.device_budget if self._bounded else None,
                       "blocks": device_blocks},
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
        from memory.persist import snapshot

        snapshot(self, folder)

    @classmethod
    def load(cls, backbone: Backbone, cfg: MemoryConfig, folder: str, stream_id: str = "default") -> "MemoryStream":
        """Restore a stream saved with `save` or journaled with memory_dir (torn blocks skipped, logged)."""
        from memory.persist import restore

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
