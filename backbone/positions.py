"""Qwen3-VL M-RoPE positions for a run of tokens, computed without the model's stateful helpers.

Same rule as `Qwen3VLModel.get_rope_index` (checked against it in tests): a text run advances a
counter by its length on all three axes; a vision group of one temporal patch with a merged grid
of h x w tokens gets T = counter, H = counter + row, W = counter + col and advances the counter by
max(h, w). Positions here start at `start`, so chunks chain by passing the previous `next_start`.
"""

from __future__ import annotations

import torch

TEXT, IMAGE, VIDEO = 0, 1, 2


def mrope_positions(token_types: torch.Tensor, grids: list[tuple[int, int]], start: int = 0) -> tuple[torch.Tensor, int]:
    """token_types [L] (0 text, 1 image, 2 video); grids: merged (h, w) per vision group, in order.

    Returns (positions [3, L] long, next_start).
    """
    types = token_types.tolist()
    out = torch.empty(3, len(types), dtype=torch.long)
    counter, i, g = start, 0, 0
    while i < len(types):
        j = i
        while j < len(types) and types[j] == types[i]:
            j += 1
        if types[i] == TEXT:
            out[:, i:j] = torch.arange(counter, counter + (j - i))
            counter += j - i
        else:
            if g >= len(grids):
                raise ValueError(f"more vision groups than the {len(grids)} grids given")
            h, w = grids[g]
            g += 1
            if j - i != h * w:
                raise ValueError(f"vision group of {j - i} tokens does not match grid {h}x{w}")
            rows = torch.arange(h).repeat_interleave(w)
            cols = torch.arange(w).repeat(h)
            out[0, i:j] = counter
            out[1, i:j] = counter + rows
            out[2, i:j] = counter + cols
            counter += max(h, w)
        i = j
    if g != len(grids):
        raise ValueError(f"{len(grids)} grids given for {g} vision groups")
    return out, counter
