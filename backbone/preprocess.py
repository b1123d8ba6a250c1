"""Temporal-patch preprocessing without torchvision: fixed per-frame size, normalise, patchify like Qwen3-VL.

Matches `Qwen3VLVideoProcessor` on CPU: bicubic antialiased resize of uint8 frames (torchvision's
tensor resize calls the same `torch.nn.functional.interpolate` kernel), /255, mean 0.5, std 0.5,
then the processor's patch order. Unlike the processor, the size is fixed per stream up front
instead of spreading a pixel budget over the whole clip.
"""

from __future__ import annotations

import numpy as np
import torch

from longwatch.ingest.resize import resize_frames

PATCH = 16
MERGE = 2
TEMPORAL = 2
FACTOR = PATCH * MERGE  # 32: height and width are multiples of this (ingest.resize.MULTIPLE, checked by a test)
PATCH_DIM = 3 * TEMPORAL * PATCH * PATCH  # 1536


def patchify(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [T, 3, H, W] (T even, H and W multiples of 32) -> float32 [T/2 * H/16 * W/16, 1536].

    Row order is Qwen3-VL's: temporal patch, then 2x2 merge groups in raster order, then the four
    16x16 patches of a group; each row is channel-major, then frame, then pixel row and column.
    """
    t, c, h, w = frames.shape
    if t % TEMPORAL or h % FACTOR or w % FACTOR or c != 3:
        raise ValueError(f"cannot patchify frames of shape {tuple(frames.shape)}")
    x = frames.to(torch.float32).div_(255.0).sub_(0.5).div_(0.5)
    gt, gh, gw = t // TEMPORAL, h // PATCH, w // PATCH
    # [gt, T2, C, gh/2, m, P, gw/2, m, P] -> [gt, gh/2, gw/2, m, m, C, T2, P, P]
    x = x.view(gt, TEMPORAL, c, gh // MERGE, MERGE, PATCH, gw // MERGE, MERGE, PATCH)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(gt * gh * gw, c * TEMPORAL * PATCH * PATCH)


def preprocess_patch(frames: np.ndarray | torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Two frames uint8 [2, H, W, 3] -> (pixel_values [gh*gw, 1536], grid_thw (1, gh, gw))."""
    x = resize_frames(frames, size)
    if x.shape[0] != TEMPORAL:
        raise ValueError(f"a temporal patch has {TEMPORAL} frames, got {x.shape[0]}")
    return patchify(x), (1, size[0] // PATCH, size[1] // PATCH)


def vision_tokens(size: tuple[int, int]) -> int:
    """LLM tokens of one temporal patch at `size` after the 2x2 merger (448x448 -> 196)."""
    return (size[0] // FACTOR) * (size[1] // FACTOR)
