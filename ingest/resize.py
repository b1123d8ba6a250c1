"""The stream's fixed per-frame size and the resize to it (Qwen3-VL's bicubic antialiased kernel, no torchvision).

Ingest snaps and resizes every frame before it becomes a temporal patch; the backbone patchifies
frames of this size (backbone/preprocess.py imports `resize_frames` from here).
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch
import torch.nn.functional as F

MULTIPLE = 32
"""Height and width are multiples of this: Qwen3-VL's ViT patch (16) times its 2x2 merge."""


def snap_frame_size(height: int, width: int, frame_size: str | int) -> tuple[int, int]:
    """Target (H, W) for a stream whose frames are `height` x `width`.

    frame_size "S": keep the aspect ratio inside an S*S pixel budget; "HxW": that size. Both sides are
    rounded to the nearest multiple of 32 (at least 32), as Qwen3-VL's smart_resize does.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"frame has no pixels: {height}x{width}")
    spec = str(frame_size)
    if re.fullmatch(r"\d+x\d+", spec):
        h, w = (int(v) for v in spec.split("x"))
    elif spec.isdigit():
        budget = int(spec) ** 2
        scale = math.sqrt(budget / (height * width))
        h, w = height * scale, width * scale
    else:
        raise ValueError(f"frame_size {frame_size!r} is not S or HxW")
    if max(h, w) / max(1e-9, min(h, w)) > 200:
        raise ValueError(f"aspect ratio of {height}x{width} is above 200")
    return max(MULTIPLE, round(h / MULTIPLE) * MULTIPLE), max(MULTIPLE, round(w / MULTIPLE) * MULTIPLE)


def resize_frames(frames: np.ndarray | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> uint8 [T, 3, h, w], bicubic with antialiasing (torchvision semantics on CPU)."""
    x = torch.as_tensor(frames)
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {tuple(x.shape)} {x.dtype}")
    x = x.permute(0, 3, 1, 2).contiguous()
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
