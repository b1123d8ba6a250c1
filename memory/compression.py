"""Compressing blocks on the device for infinipot and streammem (MemoryStream mixin).

A block leaving the window leaves the cache and keeps its text and a per-layer choice of vision
tokens (policy.keep) in a device-resident store outside the cache, so new patches still attend to
the sinks and the window only; a question brings the store in. When the store outgrows its token
budget, policy.fit re-allocates tokens globally and the least valuable blocks shrink or go.
"""

from __future__ import annotations

import torch

from longwatch.backbone.hooks import QKCapture
from longwatch.backbone.prefill import prefill
from longwatch.backbone.rope import rope_text
from longwatch.memory.block import MEMORY, Block
from longwatch.memory.device import compress_kv

FIT_SLACK = 1 / 16
"""When the store overflows, it is re-allocated down to this share below its budget, so the global
re-allocation (which may shrink every stored block) runs once per many patches instead of at every
patch once the store is full: measured on tiny at 224x224 with a 16 MB budget, it took 3.6 ms of a
15.3 ms patch when it ran every time."""


class Compression:
    def _proxy_queries(self) -> torch.Tensor:
        """Post-RoPE queries of the template's generic turn opener run after the current cache:
        [layers, heads, tokens, head_dim]."""
        seg = self.bb.layout.question("")
        length = self.cache.length
        with QKCapture(self.bb.model, queries=True) as cap:
            prefill(self.bb.model, self.cache, [seg], self.next_position, None)
        self.cache.truncate(length)
        pos = torch.arange(self.next_position, self.next_position + len(seg))
        out = [rope_text(self.bb.rotary_emb, q, pos) for q in cap.queries]
        return torch.stack(out)

    def _shrink(self, block: Block, kv: torch.Tensor, scores: torch.Tensor, k: int) -> torch.Tensor:
        """kv of `block` keeping its text and k vision tokens per layer (best `scores`); updates the block."""
        # a new prototype must not make the block longer: it takes one vision token's place
        add_proto = self.policy.prototype and not block.n_proto and block.n_vis >= 2
        k = min(k, block.n_vis - 1) if add_proto else min(k, block.n_vis)
        keep = self.policy.keep(scores, k)
        new = compress_kv(kv, block, keep, add_proto or bool(block.n_proto))
        block.scores = torch.gather(scores, 1, keep)
        orig = block.kept if block.kept is not None else torch.arange(block.n_vis).expand(keep.shape[0], -1)
        block.kept = torch.gather(orig, 1, keep)
        block.n_vis = keep.shape[1]
        if add_proto:
            block.n_proto = 1
        return new

    def _to_memory(self, block: Block, kv: torch.Tensor) -> None:
        """A block that left the window: score it, compress it, keep it in the device store."""
        keys = kv[:, 0, :, block.n_head: block.n_head + block.n_vis]
        if self.policy.wants_proxy:
            scores = self.policy.score_exit(keys, self._proxy_queries()).float().cpu()
        else:
            scores = block.scores if block.scores is not None else torch.zeros(kv.shape[0], block.n_vis)
        new = self._shrink(block, kv, scores, self.policy.keep_count(block.n_vis))
        self._fit_memory(reserve=new.shape[3])  # make room first: the store never exceeds its budget
        block.meta["compressed"] = True
        block.tier, block.rot_base = MEMORY, self.base
        self.memstore[block.id] = new
        if self.journal:
            self.journal.put(block, new, self)
            self.journal.tier(block)

    def _fit_memory(self, reserve: int = 0) -> None:
        """Shrink or evict stored blocks until the compressed memory plus `reserve` tokens fits its budget."""
        memory = sorted((self.blocks[i] for i in self.memstore), key=lambda b: b.id)
        budget = self.plan.memory_tokens - reserve
        if sum(b.n_tokens for b in memory) <= budget:
            return
        counts = self.policy.fit(memory, budget - int(self.plan.memory_tokens * FIT_SLACK))
        for b in memory:
            if b.id not in counts:
                self._evict(b)
            elif counts[b.id] < b.n_vis:
                scores = b.scores if b.scores is not None else torch.zeros(self.cache.num_layers, b.n_vis)
                new = self._shrink(b, self.memstore[b.id], scores, counts[b.id])
                self.memstore[b.id] = new
                if self.journal:
                    self.journal.put(b, new, self)
                    self.journal.tier(b)
