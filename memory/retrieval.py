"""Question-driven block retrieval (ReKV): per-layer query vs block key summaries, combined, top-k plus times.

Score of block b at layer l is the mean, over the question's tokens and query heads, of q . k_b
where k_b is the block's mean key for the query head's KV group (GQA). That mean of dot products
factorises into one inner product per layer between
    Q_l = concat_g( sum_{h in g} mean_t q_{t,h} ) / num_heads     and     K_l = concat_g( mean_i k_{i,g} ),
so an inner-product index over K_l answers it exactly. Layers are combined by z-scoring each
layer's scores over the candidates and averaging: raw dot products grow with the key norms of a
layer, and ReKV's unnormalised "cosine" lets a few layers dominate.
"""

from __future__ import annotations

import torch

from longwatch.backbone.rope import apply_shift, shift_cos_sin


def block_summary(keys: list[torch.Tensor]) -> torch.Tensor:
    """Per-layer keys [tokens, kv_heads, head_dim] (pre-RoPE or cached) -> [layers, kv_heads * head_dim]."""
    return torch.stack([k.float().mean(0).reshape(-1) for k in keys])


def absolute_summary(summary: torch.Tensor, rotary: torch.nn.Module, base: int, kv_heads: int) -> torch.Tensor:
    """A summary [layers, kv_heads * head_dim] of cached keys (rotated for model positions) moved to
    absolute positions, so summaries taken before and after a re-basing compare."""
    cos, sin = shift_cos_sin(rotary, base, torch.float32, summary.device)
    return apply_shift(summary.view(summary.shape[0], kv_heads, -1), cos, sin).reshape(summary.shape)


def question_query(queries: list[torch.Tensor], kv_heads: int) -> torch.Tensor:
    """Per-layer queries [tokens, heads, head_dim] -> [layers, kv_heads * head_dim] (see module docstring)."""
    out = []
    for q in queries:
        t, h, d = q.shape
        grouped = q.float().mean(0).view(kv_heads, h // kv_heads, d).sum(1) / h
        out.append(grouped.reshape(-1))
    return torch.stack(out)


def combine_layers(scores: torch.Tensor) -> torch.Tensor:
    """scores [layers, N] -> [N]: mean over layers of per-layer z-scores."""
    if scores.shape[1] <= 1:
        return scores.mean(0)
    mu = scores.mean(1, keepdim=True)
    sd = scores.std(1, keepdim=True).clamp_min(1e-6)
    return ((scores - mu) / sd).mean(0)


def top_k(ids: list[int], combined: torch.Tensor, k: int, exclude: set[int] = frozenset()) -> list[tuple[int, float]]:
    """The k best (id, score) pairs, best first, skipping `exclude`."""
    order = torch.argsort(combined, descending=True).tolist()
    picked = []
    for i in order:
        if ids[i] in exclude:
            continue
        picked.append((ids[i], float(combined[i])))
        if len(picked) == k:
            break
    return picked


def spread(ids: list[int], limit: int) -> list[int]:
    """At most `limit` ids, evenly spaced over the list (keeps first and last)."""
    if len(ids) <= limit:
        return list(ids)
    if limit == 1:
        return [ids[len(ids) // 2]]
    step = (len(ids) - 1) / (limit - 1)
    return [ids[round(i * step)] for i in range(limit)]
