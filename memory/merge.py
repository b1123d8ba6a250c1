"""Token merging for livevlm's pages: each vision token a page leaves out is averaged into its most similar kept one."""

from __future__ import annotations

import torch

from longwatch.backbone.inputs import apply_shift, mrope_cos_sin


def grid_offsets(index: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """index [layers, n] of vision tokens in their block's raster order (h x w merged grid) -> their M-RoPE
    offsets [3, layers, n] from the block's first vision token: (0, row, col), as `mrope_positions` lays out
    a vision group (T the same for the whole group, H = T + row, W = T + col)."""
    if grid[0] * grid[1] <= 0:
        raise ValueError(f"merging needs the block's vision grid (h, w), got {grid}")
    return torch.stack([torch.zeros_like(index), index // grid[1], index % grid[1]])


def merge_kept(vis: torch.Tensor, keep: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge every vision token into the kept one whose key is most like its own (ToMe's bipartite step).

    vis: [layers, 2, kv_heads, n, head_dim] K/V of a block's vision tokens, keys rotated at offsets
    within the block whose rotations are cos/sin [layers, n, head_dim] (`mrope_cos_sin` of `grid_offsets`),
    plus one shift the whole block shares; keep: [layers, k] indices of the kept tokens, per layer.
    Returns (kv [layers, 2, kv_heads, k, head_dim] of the kept tokens, counts [layers, k] of the tokens
    each one now stands for). A merged token's value is the mean of the values it stands for; its key
    the mean of their keys before RoPE, rotated again at the kept token's own place, so the page still
    comes back at exact rotations. A kept token that absorbed nothing is returned bit for bit.

    Keys are un-rotated by their offset within the block only: a rotation the whole block shares changes
    neither cosines nor means (rotations are linear and orthogonal), and small offsets keep float32 angles
    exact where absolute positions (up to rebase_limit) would not. The model's own pre-RoPE keys (the QK
    hooks behind retrieval summaries) exist only during the forward that encoded the block; un-rotating
    the cached keys gives the same vectors without keeping a second copy of every block.

    Similarity is per layer (cosine, mean over KV heads, as `novelty_scores`): a page keeps a different
    set of tokens in each layer, so each layer merges into its own kept tokens by its own keys.
    """
    layers, _, heads, n, dim = vis.shape
    k = keep.shape[1]
    keep = keep.to(vis.device)
    local = apply_shift(vis[:, 0].float(), cos[:, None], -sin[:, None])  # [L, H, n, D], in the block's frame
    unit = torch.nn.functional.normalize(local, dim=-1)
    at_keep = keep[:, None, :, None].expand(layers, heads, k, dim)
    sim = torch.einsum("lhnd,lhkd->lnk", unit, torch.gather(unit, 2, at_keep)) / heads  # [L, n, k]
    target = sim.argmax(-1)
    target.scatter_(1, keep, torch.arange(k, device=vis.device).expand(layers, k))  # a kept token is its own
    counts = torch.zeros(layers, k, device=vis.device).scatter_add_(1, target, torch.ones(layers, n, device=vis.device))
    into = target[:, None, :, None].expand(layers, heads, n, dim)
    keys = torch.zeros(layers, heads, k, dim, device=vis.device).scatter_add_(2, into, local)
    values = torch.zeros(layers, heads, k, dim, device=vis.device).scatter_add_(2, into, vis[:, 1].float())
    share = counts[:, None, :, None]
    kept_cs = keep[..., None].expand(layers, k, dim)
    keys = apply_shift(keys / share, torch.gather(cos, 1, kept_cs)[:, None], torch.gather(sin, 1, kept_cs)[:, None])
    merged = torch.stack([keys, values / share], dim=1).to(vis.dtype)
    kept = torch.gather(vis, 3, keep[:, None, None, :, None].expand(layers, 2, heads, k, dim))
    return torch.where((counts > 1)[:, None, None, :, None], merged, kept), counts


def merge_page(vis: torch.Tensor, keep: torch.Tensor, index: torch.Tensor, grid: tuple[int, int],
               rotary: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """`merge_kept` for vision K/V `vis` [layers, 2, kv_heads, n, head_dim] whose tokens are `index`
    [layers, n] of the block's `grid`, with the rotations of the model's rotary module."""
    cos, sin = mrope_cos_sin(rotary, grid_offsets(index, grid), vis.device)
    return merge_kept(vis, keep, cos, sin)
