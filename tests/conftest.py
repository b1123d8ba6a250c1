"""Shared fixtures: the tiny offline backbone (built once per session) and small synthetic frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny():
    """The `tiny` preset in float32 on CPU: seeded random weights, real Qwen3 tokenizer."""
    from longwatch.backbone.config import ModelConfig
    from longwatch.backbone.model import Backbone

    return Backbone.load(ModelConfig(name="tiny", dtype="float32", device="cpu"))


def random_frames(n_patches: int, h: int = 64, w: int = 96, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8) for _ in range(n_patches)]


@pytest.fixture
def frames():
    return random_frames
