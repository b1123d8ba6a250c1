"""Memory policies: the interface every policy implements (documented on `Policy`), the five policies, their registry.

- full: every block stays on the device and every patch attends to all of them (exact, unbounded baseline).
- sliding: attention sinks plus the recent window; older blocks are dropped (StreamingLLM).
- rekv: offload blocks leaving the window to host/disk, retrieve the top-k per question (ReKV). Selection =
  blocks covering the times the question names (always), then the best-scoring blocks by question-query vs
  block-key similarity (memory/retrieval.py), excluding those already chosen.
- infinipot: compress blocks within a fixed device token budget by temporal redundancy and value norm
  (InfiniPot-V). When a patch is encoded, each vision token gets two query-free scores per layer:
  TaR (temporal-axis redundancy), the cosine similarity of its key to the key at the same spatial position
  in the previous patch (averaged over KV heads): a token that barely changed is redundant; and VaN (value
  norm), the L2 norm of its value (averaged over heads): large values carry more. The score is the mean of
  (1 - redundancy) and value norm, each min-max scaled to [0, 1] per layer. Blocks leaving the window keep
  the top `compress_ratio` of their vision tokens per layer; when the compressed memory exceeds its budget,
  tokens are re-allocated by one global ranking.
- streammem: query-agnostic compression by proxy-query attention plus a per-frame prototype (StreamMem).
  When a block leaves the window, the chat template's generic turn opener (e.g.
  "<|im_end|>\\n<|im_start|>assistant\\n") is run after the current cache as proxy queries; each vision
  token's score per layer is the softmax attention it receives from those queries (mean over proxy tokens
  and query heads of its KV group). The block keeps its top `compress_ratio` tokens per layer plus one
  prototype token: the mean key and value of all its vision tokens, so a frame whose tokens were mostly
  dropped is still represented.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch

from longwatch.memory.block import Block
from longwatch.memory.config import MemoryConfig
from longwatch.memory.retrieval import combine_layers, top_k


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


class FullPolicy(Policy):
    name = "full"
    on_exit = Exit.KEEP

    def window(self, cfg: MemoryConfig) -> int | None:
        return None


class SlidingPolicy(Policy):
    name = "sliding"
    on_exit = Exit.DROP


class ReKVPolicy(Policy):
    name = "rekv"
    on_exit = Exit.OFFLOAD
    retrieves = True

    def select(self, ids: list[int], scores: torch.Tensor, k: int, forced: list[int]) -> list[Selection]:
        """ids of indexed blocks, their per-layer scores [layers, N], k similarity picks, forced time picks."""
        chosen = [Selection(b, "time") for b in forced]
        if k > 0 and ids:
            combined = combine_layers(scores)
            chosen += [Selection(b, "retrieved", s) for b, s in top_k(ids, combined, k, exclude=set(forced))]
        return chosen


def _unit(x: torch.Tensor) -> torch.Tensor:
    """Min-max scale along the last dim to [0, 1]; a constant row maps to 0."""
    lo = x.min(-1, keepdim=True).values
    hi = x.max(-1, keepdim=True).values
    return (x - lo) / (hi - lo).clamp_min(1e-12)


def tar_van_scores(keys: torch.Tensor, values: torch.Tensor, prev_keys: torch.Tensor | None) -> torch.Tensor:
    """keys/values [layers, kv_heads, n, head_dim], prev_keys same shape or None -> scores [layers, n]."""
    van = values.float().norm(dim=-1).mean(1)  # [L, n]
    if prev_keys is None or prev_keys.shape != keys.shape:
        novelty = torch.ones_like(van)  # first patch (or a size change): nothing to be redundant with
    else:
        cos = torch.nn.functional.cosine_similarity(keys.float(), prev_keys.float(), dim=-1).mean(1)
        novelty = 1.0 - cos
    return 0.5 * _unit(novelty) + 0.5 * _unit(van)


class InfiniPotPolicy(Policy):
    name = "infinipot"
    on_exit = Exit.COMPRESS
    scores_at_ingest = True

    def score_new(self, keys: torch.Tensor, values: torch.Tensor, prev_keys: torch.Tensor | None) -> torch.Tensor:
        return tar_van_scores(keys, values, prev_keys)


def proxy_attention_scores(keys: torch.Tensor, proxy_queries: torch.Tensor) -> torch.Tensor:
    """keys [layers, kv_heads, n, head_dim] (cached, rotated); proxy_queries [layers, heads, t, head_dim]
    (rotated at their positions) -> scores [layers, n]: attention mass from the proxies over the block."""
    layers, kv_heads, n, d = keys.shape
    heads = proxy_queries.shape[1]
    q = proxy_queries.float().view(layers, kv_heads, heads // kv_heads, -1, d)
    logits = torch.einsum("lgrtd,lgnd->lgrtn", q, keys.float()) / d**0.5
    return torch.softmax(logits, dim=-1).mean(dim=(1, 2, 3))


def prototype(keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean key and value over a block's vision tokens: [layers, kv_heads, 1, head_dim] each."""
    return keys.mean(2, keepdim=True), values.mean(2, keepdim=True)


class StreamMemPolicy(Policy):
    name = "streammem"
    on_exit = Exit.COMPRESS
    wants_proxy = True
    prototype = True

    def score_exit(self, keys: torch.Tensor, proxy_queries: torch.Tensor | None) -> torch.Tensor:
        if proxy_queries is None:
            raise ValueError("streammem needs proxy queries to score a block")
        return proxy_attention_scores(keys, proxy_queries)


REGISTRY: dict[str, type[Policy]] = {
    "full": FullPolicy,
    "sliding": SlidingPolicy,
    "rekv": ReKVPolicy,
    "infinipot": InfiniPotPolicy,
    "streammem": StreamMemPolicy,
}


def make_policy(cfg: MemoryConfig) -> Policy:
    try:
        return REGISTRY[cfg.policy](cfg)
    except KeyError:
        raise ValueError(f"memory.policy: unknown policy {cfg.policy!r} (choose from {', '.join(REGISTRY)})") from None


__all__ = ["Exit", "Policy", "Selection", "REGISTRY", "leaving_window", "make_policy"]
