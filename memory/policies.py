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
  the novelty (1 - redundancy) / 2 and the value norm over the stream's running mean value norm of that
  layer: no per-block scaling, so scores of different blocks compare.
  Blocks leaving the window keep the top `compress_ratio` of their vision tokens per layer; when the
  compressed memory exceeds its budget, tokens are re-allocated by one global ranking (`fit_global`).
- streammem: query-agnostic compression by proxy-query attention plus a per-frame prototype (StreamMem).
  When a block leaves the window, the chat template's generic turn opener (e.g.
  "<|im_end|>\\n<|im_start|>assistant\\n") is run after the current cache as proxy queries; each vision
  token's score per layer is the softmax attention it receives from those queries over that cache plus
  the block (mean over proxy tokens and query heads of its KV group). The block keeps its top `compress_ratio` tokens per layer plus one
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
    - ``score_exit(keys, proxy_queries, context)``: importance [layers, n_vis] when a block leaves the
      window, given post-RoPE proxy queries [layers, heads, tokens, head_dim] and the per-layer keys of
      the cache they ran over. Default None.
    - ``wants_proxy``: True if ``score_exit`` needs proxy queries (the stream computes them).
    - ``keep(scores, k)``: per-layer indices [layers, k] of the vision tokens a compressed block keeps.
    - ``fit(blocks, budget)``: {block id: vision tokens to keep} so that the compressed memory's
      tokens fit ``budget``; ids left out are evicted (oldest first when even timestamps do not fit).
    - ``select(ids, scores, k, forced)``: which offloaded blocks answer a question (rekv).
    - ``prototype``: True if a compressed block also keeps one merged prototype token (streammem).
    - ``merges``: True if a page (``pages``) merges the vision tokens it does not keep into its kept ones.

    Invariants the store (memory/store.py) keeps around these decisions: no tier exceeds its byte budget; a kept
    block keeps its timestamp text; with budgets larger than the stream (and compress_ratio 1) rekv and
    infinipot drop nothing, so an answer sees every block as it was encoded. That equals ``full`` only
    when the window covers the stream: a patch is encoded over sinks + window, so its K/V differ from
    full's once older blocks have left the window (tests/test_memory_stream.py measures 0.05 on tiny).
    streammem's prototype takes one vision token's place even at compress_ratio 1.
    """

    name = "base"
    on_exit: Exit = Exit.KEEP
    retrieves = False
    scores_at_ingest = False
    wants_proxy = False
    prototype = False
    pages = False
    """True if an offloaded block is first shrunk to keep_count vision tokens by its ingest scores (livevlm)."""
    merges = False
    """True if a page's vision tokens that are not kept are merged into their most similar kept ones, not dropped."""
    captions = False
    """True if the stream keeps a text memory of captions beside its KV (streamchat, videorag)."""
    frames = False
    """True if the stream keeps its patches' frames on disk to encode afresh per question (videorag)."""

    def __init__(self, cfg: MemoryConfig) -> None:
        self.cfg = cfg

    def window(self, cfg: MemoryConfig) -> int | None:
        return cfg.window_blocks

    def score_new(self, keys: torch.Tensor, values: torch.Tensor, prev_keys: torch.Tensor | None) -> torch.Tensor | None:
        return None

    def score_exit(self, keys: torch.Tensor, proxy_queries: torch.Tensor | None,
                   context: list[torch.Tensor] | None = None) -> torch.Tensor | None:
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
    """Allocate vision tokens to blocks by one global ranking that compares like with like.

    Every block first costs its text (timestamp, vision start/end) and prototype; if those alone
    exceed `budget`, the oldest blocks are evicted. The remaining budget goes, token by token, to the
    block whose next token is worth most (InfiniPot-V and StreamMem both rank tokens globally within a
    fixed budget). A compressed block keeps its own top tokens in each layer, so column j holds a
    different token in each layer: the worth of a block's k-th token is the mean over layers of its
    k-th best score in that layer, not the mean of column k. Scores are put on one scale per layer by
    dividing by that layer's mean over all the blocks being fitted, so no layer outweighs the others;
    the policies' scores carry no per-block normalisation, so blocks compare directly.
    """
    kept = sorted(blocks, key=lambda b: b.t_start)
    fixed = sum(b.n_head + b.n_tail + b.n_proto for b in kept)
    while kept and fixed > budget:
        old = kept.pop(0)
        fixed -= old.n_head + old.n_tail + old.n_proto
    left = budget - fixed
    if sum(b.n_vis for b in kept) <= left:
        return {b.id: b.n_vis for b in kept}
    counts = {b.id: 0 for b in kept}
    scored = [b for b in kept if b.n_vis]
    if not scored or left <= 0:
        return counts
    layers = max(b.scores.shape[0] if b.scores is not None else 1 for b in scored)
    ranked = [torch.sort(b.scores.float(), dim=1, descending=True).values if b.scores is not None
              else torch.zeros(layers, b.n_vis) for b in scored]
    scale = torch.cat(ranked, dim=1).abs().mean(1, keepdim=True).clamp_min(1e-12)  # [layers, 1]
    worth = torch.cat([(r / scale).mean(0) for r in ranked])  # each block's gains, best first
    owner = torch.cat([torch.full((b.n_vis,), i) for i, b in enumerate(scored)])
    for i in owner[torch.topk(worth, min(left, len(worth))).indices].tolist():
        counts[scored[i].id] += 1
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


def tar_van_scores(keys: torch.Tensor, values: torch.Tensor, prev_keys: torch.Tensor | None,
                   van_ref: torch.Tensor | None = None) -> torch.Tensor:
    """keys/values [layers, kv_heads, n, head_dim], prev_keys same shape or None, van_ref [layers] (the
    stream's typical value norm per layer; None = this patch's mean) -> scores [layers, n].

    The mean of novelty (1 - cosine to the key at the same place in the previous patch, over 2: in
    [0, 1]) and value norm over the stream's typical value norm. No per-block min-max scaling, so a
    patch that changed little scores below one that changed a lot, and fit_global's ranking across
    blocks compares like with like.
    """
    van = values.float().norm(dim=-1).mean(1)  # [L, n]
    ref = van.mean(1) if van_ref is None else van_ref.to(van.device, van.dtype)
    if prev_keys is None or prev_keys.shape != keys.shape:
        novelty = torch.ones_like(van)  # first patch (or a size change): nothing to be redundant with
    else:
        novelty = 0.5 * (1.0 - torch.nn.functional.cosine_similarity(keys.float(), prev_keys.float(), dim=-1).mean(1))
    return 0.5 * novelty + 0.5 * van / ref.clamp_min(1e-12)[:, None]


class InfiniPotPolicy(Policy):
    """InfiniPot-V's scores, with the value norm measured against the stream's running mean value norm
    per layer (over the last ~`VAN_MEMORY` patches), so blocks scored hours apart compare. The running
    mean is not journaled: a reloaded stream re-learns it from its next patches."""

    name = "infinipot"
    on_exit = Exit.COMPRESS
    scores_at_ingest = True
    VAN_MEMORY = 1000

    def __init__(self, cfg: MemoryConfig) -> None:
        super().__init__(cfg)
        self._van_ref: torch.Tensor | None = None
        self._seen = 0

    def score_new(self, keys: torch.Tensor, values: torch.Tensor, prev_keys: torch.Tensor | None) -> torch.Tensor:
        van = values.float().norm(dim=-1).mean(1).mean(1)  # [layers]: this patch's mean value norm
        self._seen = min(self._seen + 1, self.VAN_MEMORY)
        self._van_ref = van if self._van_ref is None else self._van_ref + (van - self._van_ref) / self._seen
        return tar_van_scores(keys, values, prev_keys, self._van_ref)


def proxy_attention_scores(keys: torch.Tensor, proxy_queries: torch.Tensor,
                           context: list[torch.Tensor] | None = None) -> torch.Tensor:
    """keys [layers, kv_heads, n, head_dim] (cached, rotated); proxy_queries [layers, heads, t, head_dim]
    (rotated at their positions); context: per-layer keys [kv_heads, T, head_dim] of the cache the proxies
    ran over -> scores [layers, n]: the attention each token would get from the proxies with the block in
    that cache (mean over proxy tokens and query heads of its KV group).

    The softmax covers the context too, as StreamMem's attention over the whole cache does; over the
    block's own tokens alone, every block's scores would sum to 1, and a block of few tokens would
    outrank one of many in fit_global's ranking across blocks.
    """
    layers, kv_heads, n, d = keys.shape
    heads = proxy_queries.shape[1]
    out = []
    for layer in range(layers):  # one layer at a time: the context's logits are [heads, t, T]
        q = proxy_queries[layer].float().view(kv_heads, heads // kv_heads, -1, d)
        logits = torch.einsum("grtd,gnd->grtn", q, keys[layer].float()) / d**0.5
        lse = torch.logsumexp(logits, dim=-1)
        if context is not None and context[layer].shape[1]:
            ctx = torch.einsum("grtd,gnd->grtn", q, context[layer].to(q.device).float()) / d**0.5
            lse = torch.logaddexp(lse, torch.logsumexp(ctx, dim=-1))
        out.append(torch.exp(logits - lse[..., None]).mean(dim=(0, 1, 2)))
    return torch.stack(out)


def prototype(keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean key and value over a block's vision tokens: [layers, kv_heads, 1, head_dim] each."""
    return keys.mean(2, keepdim=True), values.mean(2, keepdim=True)


class StreamMemPolicy(Policy):
    name = "streammem"
    on_exit = Exit.COMPRESS
    wants_proxy = True
    prototype = True

    def score_exit(self, keys: torch.Tensor, proxy_queries: torch.Tensor | None,
                   context: list[torch.Tensor] | None = None) -> torch.Tensor:
        if proxy_queries is None:
            raise ValueError("streammem needs proxy queries to score a block")
        return proxy_attention_scores(keys, proxy_queries, context)


def novelty_scores(keys: torch.Tensor, prev_keys: torch.Tensor | None) -> torch.Tensor:
    """keys, prev_keys [layers, kv_heads, n, head_dim] (the previous patch's, or None) -> [layers, n] in [0, 1]:
    (1 - cosine to the key at the same place in the previous patch) / 2, mean over KV heads; 1 without one."""
    if prev_keys is None or prev_keys.shape != keys.shape:
        return torch.ones(keys.shape[0], keys.shape[2])
    return 0.5 * (1.0 - torch.nn.functional.cosine_similarity(keys.float(), prev_keys.float(), dim=-1).mean(1))


class LiveVLMPolicy(ReKVPolicy):
    """LiveVLM: a short-term window of whole blocks; a block leaving it becomes a long-term page, offloaded to
    host/disk and indexed by its position-agnostic (pre-RoPE) mean keys. A page keeps, per layer, the vision
    tokens least like the same place in the previous frame (temporal redundancy); each of the others is merged
    into the kept token whose key is most like its own, as the paper merges them (memory/merge.py: count-weighted
    means of values and of pre-RoPE keys, per layer), or dropped with memory.page_merge false. A page holds
    only its kept tokens either way. Questions retrieve pages as rekv retrieves blocks (time-named first,
    then by similarity), and a page comes back at its original positions (its keys keep exact rotations)."""

    name = "livevlm"
    scores_at_ingest = True
    pages = True

    @property
    def merges(self) -> bool:
        return self.cfg.page_merge

    def score_new(self, keys: torch.Tensor, values: torch.Tensor, prev_keys: torch.Tensor | None) -> torch.Tensor:
        return novelty_scores(keys, prev_keys)


class StreamChatPolicy(SlidingPolicy):
    """StreamChat: application-level text memory. The KV is a sliding window (older blocks dropped); the
    backbone captions the stream as it plays and questions are answered from the notes they pick plus the
    window (memory/textmem.py decides, memory/captions.py writes and asks)."""

    name = "streamchat"
    captions = True


class VideoRAGPolicy(StreamChatPolicy):
    """Video RAG: captions as streamchat, plus each patch's frames kept on the disk tier; a question's patches
    (by time, or by the captions nearest to it) are encoded afresh before it (memory/videorag.py)."""

    name = "videorag"
    frames = True


REGISTRY: dict[str, type[Policy]] = {
    "full": FullPolicy,
    "sliding": SlidingPolicy,
    "rekv": ReKVPolicy,
    "infinipot": InfiniPotPolicy,
    "streammem": StreamMemPolicy,
    "livevlm": LiveVLMPolicy,
    "streamchat": StreamChatPolicy,
    "videorag": VideoRAGPolicy,
}


def make_policy(cfg: MemoryConfig) -> Policy:
    try:
        return REGISTRY[cfg.policy](cfg)
    except KeyError:
        raise ValueError(f"memory.policy: unknown policy {cfg.policy!r} (choose from {', '.join(REGISTRY)})") from None


__all__ = ["Exit", "Policy", "Selection", "REGISTRY", "leaving_window", "make_policy"]
