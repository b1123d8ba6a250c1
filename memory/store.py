"""BlockStore: the one owner of a stream's blocks, their tiers, the retrieval index and the byte accounting.

Encoding (memory/engine.py) hands it each new block and says, from the policy, which blocks leave the
window and how; answering (memory/engine.py) reads from it. Nothing else moves, compresses or evicts a
block. The store needs no model: only the cache, the policy's decisions and the rotary module's
frequencies, so it runs on made-up tensors (tests/test_memory_store.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from types import MappingProxyType
from typing import Callable, Iterator, Mapping

import torch

from longwatch.backbone.cache import KVCache
from longwatch.backbone.inputs import shift_cos_sin
from longwatch.memory.block import DEVICE, DISK, EVICTED, HOST, MEMORY, Block, DevicePlan, Recorder, StreamState, \
    placed, shrink
from longwatch.memory.blockfiles import FileRef
from longwatch.memory.config import MemoryConfig
from longwatch.memory.policies import Policy
from longwatch.memory.retrieval import FaissIndex, TorchIndex, absolute_summary, block_summary
from longwatch.memory.tiers import DeviceTier, DiskTier, HostTier, empty_stats, stream_stats

log = logging.getLogger(__name__)

FIT_SLACK = 1 / 16
"""An overflowing compressed store is re-allocated to this share below its budget: once per many patches, not
at every one (on tiny at 224x224, 16 MB: 3.6 ms of a 15.3 ms patch)."""

Scorer = Callable[[torch.Tensor], torch.Tensor]  # vision keys [layers, kv_heads, n_vis, head_dim] -> [layers, n_vis]


class BlockStore:
    """Blocks of one stream in their tiers: device (the KV cache, plus compressed blocks beside it), host, disk.

    Invariants:
    - No tier exceeds its budget. The cache is capped at `plan.capacity_tokens` (KVCache raises CacheFull
      rather than grow past it); the compressed store at `plan.memory_tokens` (room is made before a block
      goes in); host and disk make room first and raise OverBudget otherwise.
    - Eviction, coldest first: a block leaving the window goes to host RAM; a full host demotes its least
      recently used to disk, a full disk evicts its least recently used; a tier that could never hold the
      block is skipped. Compressed blocks are re-allocated by `policy.fit` (left-out ones are evicted).
    - Device order is [prefix | sinks | window], in time order. Whatever a question appends (blocks
      brought in, question, answer) happens inside `transient()` and is truncated away afterwards.
    - Positions: `Block.pos_start` is absolute; a device block's keys are rotated for the current base, a stored
      copy's for its `rot_base`; re-basing keeps prefix and sinks in place. Blocks keep their timestamp text
      whatever is compressed; every change goes to the journal if any.
    """

    def __init__(self, cache: KVCache, policy: Policy, cfg: MemoryConfig, rotary: torch.nn.Module,
                 host: HostTier, disk: DiskTier | None, index: TorchIndex | FaissIndex | None,
                 lock: threading.RLock | None = None, journal: Recorder | None = None, name: str = "stream") -> None:
        self.policy, self.cfg, self.name = policy, cfg, name
        self._rotary, self._host, self._disk, self._index = rotary, host, disk, index
        self.lock = lock or threading.RLock()
        """Held by whatever changes this store (ingest, a question, an answer in place); before the model lock."""
        self._journal = journal
        self._device = DeviceTier(cache, index)
        host.index = index
        self._blocks: dict[int, Block] = {}
        self._state = StreamState()
        self._plan: DevicePlan | None = None
        self._last_stats: dict | None = None

    @property
    def cache(self) -> KVCache:
        """The cache; the model writes to it only before `adopt` or inside `transient()`."""
        return self._device.cache

    @property
    def blocks(self) -> Mapping[int, Block]:
        return MappingProxyType(self._blocks)

    @property
    def device_blocks(self) -> tuple[Block, ...]:
        """Blocks in the cache, in cache order."""
        return tuple(self._device.blocks)

    @property
    def window(self) -> list[Block]:
        """Non-sink patch blocks in the cache, oldest first."""
        return [b for b in self._device.blocks if b.kind == "patch" and not b.is_sink]

    @property
    def state(self) -> StreamState:
        return dataclasses.replace(self._state)

    @property
    def next_position(self) -> int:
        return self._state.next_position

    @property
    def base(self) -> int:
        return self._state.base

    @property
    def plan(self) -> DevicePlan | None:
        return self._plan

    @property
    def host(self) -> HostTier:
        return self._host

    @property
    def index(self) -> TorchIndex | FaissIndex | None:
        return self._index

    @property
    def journal(self) -> Recorder | None:
        return self._journal

    @property
    def bounded(self) -> bool:
        return self.cfg.policy != "full"

    def set_plan(self, plan: DevicePlan, size: tuple[int, int]) -> None:
        """Budget the device tier for frames of `size`; a stream's frame size never changes."""
        if self._plan is not None and self._state.size != size:
            raise ValueError(f"stream frame size changed from {self._state.size} to {size}")
        self._plan, self._state.size = plan, size
        if self.cache.max_tokens != plan.capacity_tokens:
            self.cache.set_max_tokens(plan.capacity_tokens)
        if self._index is not None and plan.index_rows:
            self._index.limit(plan.index_rows)
        self._host.reserve = plan.host_reserve

    def adopt(self, block: Block, kv: torch.Tensor | None = None, prerope: list[torch.Tensor] | None = None) -> None:
        """Record a block the model has just written at the end of the cache (or write `kv` there first).

        Computes what the policy keeps of a new block (retrieval summary, ingest scores), then journals it.
        `prerope`: per-layer pre-RoPE keys [tokens, kv_heads, head_dim] for position-agnostic summaries.
        """
        if block.pos_start != self._state.base + self._state.next_position:
            raise ValueError(f"block {block.id} starts at {block.pos_start}, the stream at "
                             f"{self._state.base + self._state.next_position}")
        if kv is not None:
            self.cache.append(kv)
        self._device.adopt_tail(block)
        self._blocks[block.id] = block
        st = self._state
        st.next_position += block.span
        if block.kind == "patch":
            st.next_id, st.tick, st.patches = block.id + 1, st.tick + 1, st.patches + 1
            st.t_last = max(st.t_last, block.t_end)
            if self.policy.retrieves:
                block.summary = self._summary(block, prerope)
            if self.policy.scores_at_ingest:
                self._score_new(block)
        self._device.track()
        if self._journal:
            self._journal.put(block, self._device.read(block), st.as_dict())

    def _summary(self, block: Block, prerope: list[torch.Tensor] | None) -> torch.Tensor:
        if prerope is not None:
            return block_summary(prerope)
        # cached keys are rotated for model positions; the index holds them in the absolute frame
        return absolute_summary(block_summary(self._device.keys(block)), self._rotary, self._state.base,
                                self.cache.kv_heads)

    def _score_new(self, block: Block) -> None:
        keys, values = self._device.vision_kv(block)
        prev = [b for b in self._device.blocks if b.kind == "patch" and b is not block]
        prev_keys = None
        if prev and prev[-1].n_vis == block.n_vis and prev[-1].n_vis == prev[-1].n_vis_orig:
            prev_keys = self._device.vision_kv(prev[-1])[0]
        scores = self.policy.score_new(keys, values, prev_keys)
        if scores is not None:
            block.scores = scores.float().cpu()

    def drop(self, block: Block) -> None:
        """Take a device block out and forget it (sliding)."""
        self._device.remove(block)
        self._evict(block)
        self._device.track()

    def offload(self, block: Block) -> None:
        """Move a device block to host RAM (making room coldest first), else disk; index it (rekv). With a paging
        policy (livevlm) it is first a page: its keep_count most novel vision tokens, the rest merged in or dropped."""
        kv = self._device.remove(block)
        if self.policy.pages and not block.meta.get("paged"):
            rotary = self._rotary if self.policy.merges else None  # merge the tokens left out, else drop them
            kv, block.meta["paged"] = shrink(block, kv, block.scores, self.policy.keep_count(block.n_vis),
                                             self.policy.keep, False, rotary), True
            if self._journal:
                self._journal.put(block, kv, self._state.as_dict())
        block.rot_base = self._state.base
        if self._index is not None and not block.meta.get("indexed"):
            self._index.add(block.id, block.summary)
            block.meta["indexed"] = True
            block.summary = None  # the index holds the one copy now (export reads it back)
        nbytes = self._host.cost(kv.numel() * kv.element_size())
        if self._host.enabled and self._host.can_ever_fit(nbytes):
            while not self._host.fits(nbytes):
                self._demote_host(self._blocks[self._host.coldest()])
            self._host.put(block.id, kv)
            block.tier = HOST
        else:
            self._to_disk(block, kv)
        if self._journal:
            self._journal.tier(block)
        self._device.track()
        self._host.track()

    def compress(self, block: Block, score: Scorer | None = None) -> None:
        """Move a device block into the compressed store with its text and policy.keep_count vision tokens, rated
        by `score` once it has left the cache (streammem: proxy queries over what stays), else by ingest scores."""
        kv = self._device.remove(block)
        if score is not None:
            scores = score(kv[:, 0, :, block.n_head: block.n_head + block.n_vis]).float().cpu()
        else:
            scores = block.scores if block.scores is not None else torch.zeros(kv.shape[0], block.n_vis)
        new = shrink(block, kv, scores, self.policy.keep_count(block.n_vis), self.policy.keep, self.policy.prototype)
        self._fit_memory(reserve=new.shape[3])  # room first: the store never exceeds its budget
        block.meta["compressed"] = True
        block.tier, block.rot_base = MEMORY, self._state.base
        self._device.memory[block.id] = new
        if self._journal:
            self._journal.put(block, new, self._state.as_dict())
            self._journal.tier(block)
        self._device.track()

    def _fit_memory(self, reserve: int = 0) -> None:
        """Shrink or evict stored blocks until the compressed store plus `reserve` tokens fits its budget."""
        memory = sorted((self._blocks[i] for i in self._device.memory), key=lambda b: b.id)
        budget = self._plan.memory_tokens - reserve
        if sum(b.n_tokens for b in memory) <= budget:
            return
        counts = self.policy.fit(memory, budget - int(self._plan.memory_tokens * FIT_SLACK))
        for b in memory:
            if b.id not in counts:
                self._evict(b)
            elif counts[b.id] < b.n_vis:
                scores = b.scores if b.scores is not None else torch.zeros(self.cache.num_layers, b.n_vis)
                self._device.memory[b.id] = new = shrink(b, self._device.memory[b.id], scores, counts[b.id], self.policy.keep, self.policy.prototype)
                if self._journal:
                    self._journal.put(b, new, self._state.as_dict())
                    self._journal.tier(b)

    def _demote_host(self, block: Block) -> None:
        self._to_disk(block, self._host.pop(block.id))
        if self._journal:
            self._journal.tier(block)

    def _to_disk(self, block: Block, kv: torch.Tensor) -> None:
        nbytes = kv.numel() * kv.element_size()
        if self._disk is None or not self._disk.can_ever_fit(nbytes):
            self._evict(block)
            return
        while not self._disk.fits(nbytes):
            old = self._blocks[self._disk.coldest()]
            self._disk.pop(old.id)
            self._evict(old)
        ref = self._journal.ref_for(block) if self._journal else None
        self._disk.put(block.id, kv, ref)
        block.tier = DISK

    def _evict(self, block: Block) -> None:
        self._device.memory.pop(block.id, None)
        block.tier = EVICTED
        self._blocks.pop(block.id, None)
        if self._index is not None and block.meta.get("indexed"):
            self._index.remove(block.id)
        self._state.evicted += 1
        if self._journal:
            self._journal.drop(block)

    @contextlib.contextmanager
    def transient(self) -> Iterator[KVCache]:
        """The cache, for a question: everything appended inside is truncated away on exit."""
        length = self.cache.length
        try:
            yield self.cache
        finally:
            self._device.track()
            self.cache.truncate(length)

    def bring_in(self, block: Block, target: int | None) -> None:
        """Append a stored block to the cache at model position `target` (None = its own); inside transient()."""
        if block.tier == HOST:
            self._host.touch(block.id)
            kv = self._host.get(block.id)
        elif block.tier == DISK:
            self._disk.touch(block.id)
            kv = self._disk.get(block.id)
        elif block.tier == MEMORY:
            kv = self._device.memory[block.id]
        else:
            raise KeyError(f"block {block.id} is {block.tier}")
        self.cache.append(placed(kv, block, self._state.base, target, self._rotary).to(self.cache.device))
        block.last_used = self._state.tick

    def visible_mask(self, hidden: list[Block]) -> torch.Tensor | None:
        """[cache length] bool, False at the slots of `hidden` device blocks (None when nothing is hidden)."""
        return self._device.visible_mask(hidden)

    def advance_clock(self) -> None:
        self._state.tick += 1

    def rebase(self, delta: int) -> None:
        """Rotate the window's keys back by `delta` positions; prefix and sinks keep their model positions
        (StreamingLLM's sinks), so their distance to a question stays under rebase_limit + the answer however
        long the stream runs. Exact among window and stored blocks; the sinks' `pos_start` moves by `delta`."""
        if delta <= 0:
            return
        st = self._state
        pinned = [b for b in self._device.blocks if b.is_sink]  # prefix + sinks: the head of the cache
        start = sum(b.n_tokens for b in pinned)
        cos, sin = shift_cos_sin(self._rotary, -delta, torch.float32, self.cache.device)
        self._device.rotate_from(start, cos, sin)
        st.next_position -= delta
        st.base += delta
        for b in self._device.blocks:
            if b.is_sink:
                b.pos_start += delta
            b.rot_base = st.base
        st.rebases += 1
        log.info("stream %s re-based by %d positions (base %d)", self.name, delta, st.base)
        if self._journal:
            self._journal.rebase(st.as_dict(), {b.id: delta for b in pinned})

    def note_distance(self, distance: int) -> None:
        """Record a forward's largest query-to-key position distance (memory/engine.py measures it)."""
        self._state.max_distance = max(self._state.max_distance, distance)

    def skip_to(self, position: int) -> None:
        """Start the next segment at model position `position` (a gap; never backwards)."""
        if position < self._state.next_position:
            raise ValueError(f"position {position} is before the next one, {self._state.next_position}")
        self._state.next_position = position

    def export(self, block: Block) -> tuple[Block, torch.Tensor]:
        """A block's metadata and kv as stored in its tier (a device block's for the current base)."""
        if block.tier == DEVICE:
            return dataclasses.replace(block, rot_base=self._state.base), self._device.read(block)
        if self._index is not None and block.meta.get("indexed"):
            block = dataclasses.replace(block, summary=self._index.get(block.id))
        if block.tier == HOST:
            return block, self._host.get(block.id)
        if block.tier == MEMORY:
            return block, self._device.memory[block.id]
        return block, self._disk.get(block.id)

    def restore_state(self, state: dict) -> None:
        """Positions and counters from a journal record (the frame size comes back through set_plan)."""
        self._state.update(state)

    def restore(self, block: Block, kv: torch.Tensor, ref: FileRef | None = None) -> bool:
        """Put a saved block back in its tier (`block.tier`); False if that tier is gone (not restored)."""
        if block.tier == DEVICE:
            self._device.append(block, placed(kv, block, self._state.base, None, self._rotary))
            block.rot_base = self._state.base
        elif block.tier == HOST:
            self._host.put(block.id, kv.clone())
        elif block.tier == MEMORY:
            self._device.memory[block.id] = kv.to(self.cache.device, self.cache.dtype).clone()
        elif block.tier == DISK and self._disk is not None:
            self._disk.put(block.id, kv, ref)
        else:
            return False
        self._blocks[block.id] = block
        if block.tier != DEVICE and self._index is not None and block.summary is not None:
            self._index.add(block.id, block.summary)
            block.meta["indexed"] = True
            block.summary = None
        elif block.summary is not None:
            block.summary = block.summary.to(self.cache.device)
        return True

    def rebind_journal(self, journal: Recorder, refs: Mapping[int, FileRef]) -> None:
        """Record into `journal` from now on; disk blocks adopt its files `refs` (a compacted journal)."""
        self._journal = journal
        if self._disk is not None:
            self._disk.rebind(journal.files, {bid: refs[bid] for bid in self._disk.ids()})

    def close(self) -> None:
        """Delete the disk tier's scratch files (the journal's own files are kept)."""
        if self._disk is not None and self._journal is None:
            for bid in self._disk.ids():
                self._disk.pop(bid)

    def stats(self) -> dict:
        """Tier bytes, peaks, budgets and block counts, from any thread (the last snapshot while it is locked)."""
        if not self.lock.acquire(blocking=False):
            return self._last_stats or empty_stats(self.cfg.policy)
        try:
            return self.refresh_stats()
        finally:
            self.lock.release()

    def refresh_stats(self) -> dict:
        self._last_stats = stream_stats(self.cfg.policy, self._state, self._device, self._host, self._disk, self._index,
                                        self._plan, self.cfg.device_budget if self.bounded else None)
        return self._last_stats
