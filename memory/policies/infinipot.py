"""infinipot: compress blocks within a fixed device token budget by temporal redundancy and value norm (InfiniPot-V).

When a patch is encoded, each vision token gets two query-free scores per layer:
- TaR (temporal-axis redundancy): cosine similarity of its key to the key at the same spatial
  position in the previous patch (averaged over KV heads); a token that barely changed is redundant.
- VaN (value norm): L2 norm of its value (averaged over heads); large values carry more.
The score is the mean of (1 - redundancy) and value norm, each min-max scaled to [0, 1] per layer.
Blocks leaving the window keep the top `compress_ratio` of their vision tokens per layer; when the
compressed memory exceeds its budget, tokens are re-allocated by one global ranking.
"""

from __future__ import annotations

import torch

from longwatch.memory.policies.base import Exit, Policy


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
