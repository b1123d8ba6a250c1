"""The interface every memory policy implements (one docstring, below) and shared selection helpers."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch

from longwatch.memory.block import Block
from longwatch.memory.config import MemoryConfig


class Exit(str, Enum):
    """What happens to a block when it leaves the recent window."""

    KEEP = "keep"          # stays on the device, whole (full)
    DROP = "drop"          # gone (sliding)
    OFFLOAD = "offload"    # to host RAM, then disk; indexed for retrieval (rekv)
    COMPRESS = "compress"  # stays on the device with fewer vision tokens (infinipot, streammem)


@dataclass(frozen=True)
class Selection:
    block_id: int
    reason: str
    """'retrieved' (similarity) or 'time' (the question names a time the block covers)."""
    score: float | None = None


class Policy:
    """A memory policy: decisions only; memory/store.py carries them out on tensors and tiers.

    Every method is a small function from block metadata and tensors to a decision, so each
    policy is testable on CPU with made-up tensors:

    - ``window(cfg)``: recent blocks a new patch attends to (``None`` = all of them: ``full``).
    - ``on_exit``: an ``Exit`` for blocks leaving the window (KEEP, DROP, OFFLOAD, COMPRESS).
    - ``retrieves``: True if offloaded blocks are brought back per question (``select`` is used).
    - ``score_new(keys, values, prev_keys)`` (when ``scores_at_ingest``): per-token importance
      [layers, n_vis] of a patch just encoded (keys/values [layers, kv_heads, n_vis, head_dim] of its vision tokens; prev_keys the
      previous patch's, or None). Default None.
    - ``score_exit(keys, proxy_queries)``: importance [layers, n_vis] when a block leaves the window,
      given post-RoPE proxy queries [layers, heads, tokens, head_dim]. Default None.
    - ``wants_proxy``: True if ``score_exit`` needs proxy queries (the stream computes them).
    - ``keep(scores, k)``: per-layer indices [layers, k] of the vision tokens a compressed block keeps.
    - ``fit(blocks, budget)``: {block id: vision tokens to keep} so that the compressed memory's
      tokens fit ``budget``; ids left out are evicted (oldest first when even timestamps do not fit).
    - ``select(ids, scores, k, forced)``: which offloaded blocks answer a question (rekv).
    - ``prototype``: True if a compressed block also keeps one merged prototype token (streammem).

    Invariants the store (memory/store.py) keeps around these decisions: no tier exceeds its byte budget; a kept
    block keeps its timestamp text; with budgets larger than the stream nothing is dropped or
    compressed, so answers equal ``full``.
    """

    name = "base"
    on_exit: Exit = Exit.KEEP
    retrieves = False
    scores_at_ingest = False
    wants_proxy = False
    prototype = False

    def __init__(self, cfg: MemoryConfig) -> None:
        self.cfg = cfg

    def window(self, cfg: MemoryConfig) -> int | None:
        return cfg.window_blocks

    def score_new(self, keys: torch.Tensor, values: torch.Tensor, prev_keys: torch.Tensor | None) -> torch.Tensor | None:
        return None

    def score_exit(self, keys: torch.Tensor, proxy_queries: torch.Tensor | None) -> torch.Tensor | None:
        return None

    def keep_count(self, n_vis: int) -> int:
        return max(1, round(n_vis * self.cfg.compress_ratio)) if n_vis else 0

    def keep(self, scores: torch.Tensor, k: int) -> torch.Tensor:
        return keep_top(scores, k)

    def fit(self, blocks: list[Block], budget: int) -> dict[int, int]:
        return fit_global(blocks, budget)

    def select(self, ids: list[int], scores: torch.Tensor, k: int, forced: list[int]) -> list[Selection]:
        return []


def leaving_window(window: list[Block], size: int | None) -> list[Block]:
    """The blocks that leave a window (`window`: non-sink device blocks, oldest first) kept at `size`
    blocks: the oldest ones beyond it; None (full) keeps them all."""
    if size is None:
        return []
    return window[: max(0, len(window) - size)]


def keep_top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """scores [layers, n] -> indices [layers, k] of the k highest per layer, in ascending token order."""
    k = min(k, scores.shape[1])
    idx = torch.topk(scores, k, dim=1).indices
    return torch.sort(idx, dim=1).values


def fit_global(blocks: list[Block], budget: int) -> dict[int, int]:
    """Allocate vision tokens to blocks by one global ranking of their (layer-mean) scores.

    Every block first costs its text (timestamp, vision start/end) and prototype; if those alone
    exceed `budget`, the oldest blocks are evicted. The remaining budget goes to the highest-scoring
    vision tokens across all blocks, which sets each block's count (InfiniPot-V and StreamMem both
    rank tokens globally within a fixed budget).
    """
    kept = sorted(blocks, key=lambda b: b.t_start)
    fixed = sum(b.n_head + b.n_tail + b.n_proto for b in kept)
    while kept and fixed > budget:
        old = kept.pop(0)
        fixed -= old.n_head + old.n_tail + old.n_proto
    left = budget - fixed
    current = sum(b.n_vis for b in kept)
    if current <= left:
        return {b.id: b.n_vis for b in kept}
    pool = []
    for b in kept:
        if b.n_vis:
            s = b.scores.float().mean(0) if b.scores is not None else torch.zeros(b.n_vis)
            pool.append(torch.stack([s, torch.full_like(s, b.id)], dim=1))
    counts = {b.id: 0 for b in kept}
    if pool and left > 0:
        allv = torch.cat(pool)
        best = torch.topk(allv[:, 0], min(left, len(allv))).indices
        for bid in allv[best, 1].long().tolist():
            counts[bid] += 1
    return counts
