"""The device tier: the KV cache's live content as an ordered run of blocks.

Cache order is [prefix | sink blocks | recent window], all in time order, so a block's slot offset
is the sum of the token counts before it. Blocks brought in for a question (retrieved, or the
compressed memory), the question and the answer are appended after the window and truncated away
afterwards.
"""

from __future__ import annotations

import torch

from longwatch.backbone.cache import KVCache
from longwatch.backbone.rope import apply_shift
from longwatch.memory.block import Block


class DeviceRegion:
    def __init__(self, cache: KVCache) -> None:
        self.cache = cache
        self.blocks: list[Block] = []

    @property
    def length(self) -> int:
        return sum(b.n_tokens for b in self.blocks)

    def offset(self, block: Block) -> int:
        off = 0
        for b in self.blocks:
            if b is block:
                return off
            off += b.n_tokens
        raise KeyError(block.id)

    def adopt_tail(self, block: Block) -> None:
        """Record a block whose tokens the model has just appended at the end of the cache."""
        if self.length + block.n_tokens != self.cache.length:
            raise RuntimeError(f"cache holds {self.cache.length} tokens, region expects {self.length + block.n_tokens}")
        self.blocks.append(block)

    def append(self, block: Block, kv: torch.Tensor) -> None:
        """Write a stored block's kv [layers, 2, kv_heads, n, head_dim] at the end and record it."""
        if kv.shape[3] != block.n_tokens:
            raise ValueError(f"block {block.id}: kv has {kv.shape[3]} tokens, metadata says {block.n_tokens}")
        self.cache.truncate(self.length)
        self.cache.append(kv.to(self.cache.device, self.cache.dtype))
        self.blocks.append(block)

    def read(self, block: Block) -> torch.Tensor:
        off = self.offset(block)
        return self.cache.read(off, off + block.n_tokens)

    def remove(self, block: Block) -> torch.Tensor:
        """Take a block out of the cache; returns a copy of its kv."""
        off = self.offset(block)
        kv = self.cache.read(off, off + block.n_tokens)
        self.cache.remove(off, off + block.n_tokens)
        self.blocks.remove(block)
        return kv

    def rotate_all(self, cos: torch.Tensor, sin: torch.Tensor) -> None:
        """Rotate every live key by a position shift (re-basing)."""
        self.cache.rotate_keys_(0, self.length, cos, sin)

    def vision_kv(self, block: Block) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of a block's vision keys and values: [layers, kv_heads, n_vis, head_dim] each."""
        off = self.offset(block) + block.n_head
        ks = torch.stack([self.cache.keys_view(i, off, off + block.n_vis) for i in range(self.cache.num_layers)])
        vs = torch.stack([self.cache.values_view(i, off, off + block.n_vis) for i in range(self.cache.num_layers)])
        return ks, vs


def rotate_kv(kv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """A copy of kv [layers, 2, kv_heads, n, head_dim] with keys rotated by a position shift."""
    out = kv.clone()
    out[:, 0] = apply_shift(kv[:, 0], cos, sin)
    return out


def compress_kv(kv: torch.Tensor, block: Block, keep: torch.Tensor, prototype: bool) -> torch.Tensor:
    """Keep head text, per-layer vision tokens `keep` [layers, k], tail text, plus an optional prototype.

    kv: [layers, 2, kv_heads, n, head_dim] of the whole block; the prototype (mean key and value of
    vision tokens at the first compression) goes last and is kept as is by later compressions.
    """
    h, v = block.n_head, block.n_vis
    head = kv[:, :, :, :h]
    vis = kv[:, :, :, h: h + v]
    tail = kv[:, :, :, h + v: h + v + block.n_tail]
    layers, two, heads, _, dim = kv.shape
    idx = keep.to(kv.device)[:, None, None, :, None].expand(layers, two, heads, keep.shape[1], dim)
    parts = [head, torch.gather(vis, 3, idx), tail]
    if prototype:
        start = h + v + block.n_tail
        if block.n_proto:  # keep the prototype of the block's original frame
            parts.append(kv[:, :, :, start: start + block.n_proto])
        else:
            parts.append(vis.float().mean(3, keepdim=True).to(kv.dtype))
    return torch.cat(parts, dim=3)
