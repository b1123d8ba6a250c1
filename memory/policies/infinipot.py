"""infinipot: compress blocks within a fixed device token budget by temporal redundancy and value norm (InfiniPot-V).

When a patch is encoded, each vision token gets two query-free scores per layer:
- TaR (temporal-axis redundancy): cosine similarity of its key to the key at the same spatial
  position in the previous patch (averaged over KV heads); a token that barely changed is redundant.
- VaN (value norm): L2 norm of its value (averaged over heads); large values carry more.
The score is the mean of the two ranks (1 - redundancy, value norm), each normalised to [0, 1].
Blocks leaving the window keep the top `compress_ratio` of their vision tokens per layer; when the
compressed memory exceeds its budget, tokens are re-allocated by one global ranking.
"""

from __future__ import annotations

import torch

from memory.policies.base import Exit, Policy


def _rank01(x: torch.Tensor) -> torch.Tensor:
    """Ranks along the last dim scaled to [0, 1] (ties broken by order)."""
    n = x.shape[-1]
    if n == 1:
        return torch.ones_like(x)
    ranks = torch.argsort(torch.argsort(x, dim=-1), dim=-1).float()
    return ranks / (n - 1)


def tar_van_scores(keys: torch.Tensor, values: torch.Tensor, prev_keys: torch.Tensor | None) -> torch.Tensor:
    """keys/values [layers, kv_heads, n, head_dim], prev_keys same shape or None -> scores [layers, n]."""
    van = values.float().norm(dim=-1).mean(1)  # [L, n]
    if prev_keys is None or prev_keys.shape != keys.shape:
        novelty = torch.ones_like(van)  # first patch (or a size change): nothing to be redundant with
    else:
        cos = torch.nn.functional.cosine_similarity(keys.float(), prev_keys.float(), dim=-1).mean(1)
        novelty = 1.0 - cos
    return 0.5 * _rank01(novelty) + 0.5 * _rank01(van)


class InfiniPotPolicy(Policy):
    name = "infinipot"
    on_exit = Exit.COMPRESS

    def score_new(self, keys: torch.Tensor, values: torch.Tensor, prev_keys: torch.Tensor | None) -> torch.Tensor:
        return tar_van_scores(keys, values, prev_keys)
