"""streammem: query-agnostic compression by proxy-query attention plus a per-frame prototype (StreamMem).

When a block leaves the window, the chat template's generic turn opener (e.g.
"<|im_end|>\\n<|im_start|>assistant\\n") is run after the current cache as proxy queries; each
vision token's score per layer is the softmax attention it receives from those queries (mean over
proxy tokens and query heads of its KV group). The block keeps its top `compress_ratio` tokens per
layer plus one prototype token: the mean key and value of all its vision tokens, so a frame whose
tokens were mostly dropped is still represented.
"""

from __future__ import annotations

import torch

from longwatch.memory.policies.base import Exit, Policy


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
