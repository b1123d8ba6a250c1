"""A memory block: one temporal patch's cached keys and values plus the metadata policies decide on."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

DEVICE, MEMORY, HOST, DISK, EVICTED = "device", "memory", "host", "disk", "evicted"
"""Tiers of a block: `memory` is the device-resident store of compressed blocks (infinipot, streammem)."""


@dataclass
class Block:
    """One temporal patch (timestamp text + vision tokens), or the prompt prefix (id -1).

    Token layout inside a block, identical in every layer:
        [head text: timestamp + <|vision_start|>] [vision tokens] [<|vision_end|>] [prototype?]
    Compression keeps head and tail text (so the block still says when it happened) and a
    per-layer choice of `n_vis` vision tokens (the same count in every layer, so every layer of
    the cache has the same length and transformers' shared attention mask stays valid).

    Positions: `pos_start` is absolute (model position + the stream's re-basing offset) and `span`
    is the position advance of the block. Stored copies carry keys rotated for model positions
    `pos - rot_base`; the device copy always matches the stream's current base.
    """

    id: int
    kind: str
    t_start: float
    t_end: float
    t_mid: float
    pos_start: int
    span: int
    n_head: int
    n_vis: int
    n_tail: int
    grid: tuple[int, int] = (0, 0)
    """Merged (h, w) of the vision tokens at creation."""
    n_vis_orig: int = 0
    n_proto: int = 0
    is_sink: bool = False
    tier: str = DEVICE
    rot_base: int = 0
    created: int = 0
    last_used: int = 0
    summary: torch.Tensor | None = None
    """[num_layers, kv_heads * head_dim] float32 key summary for retrieval (None when unused)."""
    scores: torch.Tensor | None = None
    """[num_layers, n_vis] float32 importance of the kept vision tokens (compressing policies)."""
    kept: torch.Tensor | None = None
    """[num_layers, n_vis] original indices of the kept vision tokens once compressed (None = all)."""
    meta: dict = field(default_factory=dict)

    @property
    def n_tokens(self) -> int:
        return self.n_head + self.n_vis + self.n_tail + self.n_proto

    def covers(self, t0: float, t1: float) -> bool:
        """True if [t0, t1] overlaps the block's time span [t_start, t_end)."""
        return self.t_start <= t1 and t0 < self.t_end

    def describe(self) -> dict:
        return {"id": self.id, "t_start": round(self.t_start, 3), "t_end": round(self.t_end, 3),
                "tokens": self.n_tokens, "tier": self.tier, "sink": self.is_sink}
