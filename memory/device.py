"""The device tier (the KV cache's live blocks plus the compressed store beside it) and the tensor
operations that carry out a policy's decisions on block K/V: rotate, compress, shrink.

Blocks brought in for a question (retrieved, or the compressed memory), the question and the answer
are appended after the window and truncated away afterwards (BlockStore.transient).
"""

from __future__ import annotations

import torch

from longwatch.backbone.cache import KVCache
from longwatch.backbone.rope import apply_shift, shift_cos_sin
from longwatch.memory.block import Block
from longwatch.memory.policies import Policy


class DeviceTier:
    """The cache's live blocks in cache order, plus the compressed blocks kept on the device beside it.

    Layout: cache slots [prefix | sink blocks | recent window], in time order, so a block's offset is
    the sum of the token counts before it; the compressed store is one kv tensor per block
    [layers, 2, kv_heads, n, head_dim]. Bytes = the cache's allocation + the store's tensors; `peak`
    is the largest seen. This class does what it is told: BlockStore decides what moves.
    """

    def __init__(self, cache: KVCache) -> None:
        self.cache = cache
        self.blocks: list[Block] = []
        self.memory: dict[int, torch.Tensor] = {}
        self.peak = 0

    @property
    def length(self) -> int:
        return sum(b.n_tokens for b in self.blocks)

    @property
    def nbytes(self) -> int:
        return self.cache.allocated_bytes + sum(t.numel() * t.element_size() for t in self.memory.values())

    def track(self) -> None:
        """Record the peak (after anything that may have grown the cache or the store)."""
        self.peak = max(self.peak, self.nbytes)

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

    def keys(self, block: Block) -> list[torch.Tensor]:
        """Per-layer cached (rotated) keys of a block: [n, kv_heads, head_dim] views."""
        off = self.offset(block)
        return [self.cache.keys_view(i, off, off + block.n_tokens).transpose(0, 1) for i in range(self.cache.num_layers)]

    def vision_kv(self, block: Block) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of a block's vision keys and values: [layers, kv_heads, n_vis, head_dim] each."""
        off = self.offset(block) + block.n_head
        ks = torch.stack([self.cache.keys_view(i, off, off + block.n_vis) for i in range(self.cache.num_layers)])
        vs = torch.stack([self.cache.values_view(i, off, off + block.n_vis) for i in range(self.cache.num_layers)])
        return ks, vs

    def stats(self, budget: int | None) -> dict:
        patches = sum(1 for b in self.blocks if b.kind == "patch")
        return {"bytes": self.nbytes, "live": self.length * self.cache.bytes_per_token, "peak": self.peak,
                "budget": budget, "blocks": patches + len(self.memory), "memory_blocks": len(self.memory)}

    def visible_mask(self, hidden: list[Block]) -> torch.Tensor | None:
        """[cache length] bool, False at the slots of `hidden` blocks (None when nothing is hidden)."""
        if not hidden:
            return None
        visible = torch.ones(self.cache.length, dtype=torch.bool)
        for b in hidden:
            off = self.offset(b)
            visible[off: off + b.n_tokens] = False
        return visible


def rotate_kv(kv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """A copy of kv [layers, 2, kv_heads, n, head_dim] with keys rotated by a position shift."""
    out = kv.clone()
    out[:, 0] = apply_shift(kv[:, 0], cos, sin)
    return out


def placed(kv: torch.Tensor, block: Block, base: int, target: int | None, rotary: torch.nn.Module) -> torch.Tensor:
    """kv of a stored block (keys rotated for model positions pos - block.rot_base) rotated to start at
    model position `target` (None = its own position in a stream re-based by `base`)."""
    phase = block.pos_start - block.rot_base
    goal = block.pos_start - base if target is None else target
    if goal == phase:
        return kv
    cos, sin = shift_cos_sin(rotary, goal - phase, torch.float32, kv.device)
    return rotate_kv(kv, cos, sin)


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


def shrink(block: Block, kv: torch.Tensor, scores: torch.Tensor, k: int, policy: Policy) -> torch.Tensor:
    """kv of `block` keeping its text and k vision tokens per layer (the policy's pick by `scores`
    [layers, n_vis]), plus a prototype token if the policy keeps one; updates the block's metadata."""
    # a new prototype must not make the block longer: it takes one vision token's place
    add_proto = policy.prototype and not block.n_proto and block.n_vis >= 2
    k = min(k, block.n_vis - 1) if add_proto else min(k, block.n_vis)
    keep = policy.keep(scores, k)
    new = compress_kv(kv, block, keep, add_proto or bool(block.n_proto))
    block.scores = torch.gather(scores, 1, keep)
    orig = block.kept if block.kept is not None else torch.arange(block.n_vis).expand(keep.shape[0], -1)
    block.kept = torch.gather(orig, 1, keep)
    block.n_vis = keep.shape[1]
    if add_proto:
        block.n_proto = 1
    return new
