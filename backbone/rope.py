"""Shift cached keys to new positions by rotation, using the model's own rotary module.

For text tokens T = H = W, and moving a block by D on all three M-RoPE axes rotates every rotary
pair by D * inv_freq regardless of how the pairs interleave T/H/W. So a block can be re-based
(or moved next to others) by rotating its cached keys; values carry no position.
"""

from __future__ import annotations

import torch


def shift_cos_sin(rotary_emb: torch.nn.Module, delta: int, dtype: torch.dtype, device: torch.device
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [head_dim] of a shift by `delta` positions on all three axes, from the model's rotary module.

    Computed in float64 from the module's inverse frequencies; delta may be negative and large.
    """
    inv_freq = rotary_emb.inv_freq.to(torch.float64)
    scale = float(getattr(rotary_emb, "attention_scaling", 1.0))
    if abs(scale - 1.0) > 1e-12:
        raise ValueError("rotary attention scaling != 1 cannot be undone by a pure rotation")
    freqs = delta * inv_freq.cpu()
    emb = torch.cat([freqs, freqs])
    return emb.cos().to(device=device, dtype=torch.float32), emb.sin().to(device=device, dtype=torch.float32)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_shift(keys: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """keys [..., head_dim] rotated by the shift whose cos/sin come from `shift_cos_sin` (computed in fp32)."""
    k = keys.to(torch.float32)
    return (k * cos + rotate_half(k) * sin).to(keys.dtype)


def rope_text(rotary_emb: torch.nn.Module, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Apply RoPE to pre-RoPE text-token vectors x [tokens, heads, head_dim] at `positions` [tokens]
    (T = H = W for text), with the model's own rotary module; returns float32 [heads, tokens, head_dim]."""
    pos = positions.to(x.device).view(1, 1, -1).expand(3, 1, -1)
    cos, sin = rotary_emb(x, pos)
    cos, sin = cos[0].float()[:, None], sin[0].float()[:, None]  # [tokens, 1, head_dim]
    xf = x.float()
    return (xf * cos + rotate_half(xf) * sin).transpose(0, 1)
