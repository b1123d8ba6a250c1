"""Compressing blocks on the device for infinipot and streammem (MemoryStream mixin).

A block leaving the window keeps its text and a per-layer choice of vision tokens (policy.keep);
when the compressed memory outgrows its token budget, policy.fit re-allocates tokens globally and
the least valuable blocks shrink or go.
"""

from __future__ import annotations

import torch

from backbone.hooks import QKCapture
from backbone.prefill import prefill
from backbone.rope import rope_text
from memory.block import Block
from memory.device import compress_kv


class Compression:
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
