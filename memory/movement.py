"""Moving blocks between tiers: offload to host, demote to disk, evict from the last tier (MemoryStream mixin).

Coldest first: a full host tier demotes its least recently used blocks to disk; a full disk tier
(or a missing one) evicts. Every move is journaled when the stream has a memory_dir.
"""

from __future__ import annotations

import torch

from longwatch.memory.block import DISK, EVICTED, HOST, MEMORY, Block


class TierMoves:
    def _evict(self, block: Block) -> None:
        self.memstore.pop(block.id, None)
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
        if block.tier == MEMORY:
            return self.memstore[block.id]
        raise KeyError(f"block {block.id} is {block.tier}")
