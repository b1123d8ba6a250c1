"""Shared fixtures: the tiny offline backbone (built once per session) and small synthetic frames.

Also: with CI set, a test that skips because a Debian package is missing fails instead (issue 13).
"""

from __future__ import annotations

import os

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


def in_ci() -> bool:
    """CI=true (or any value but empty/0/false/no), as .ci/install-system-deps.sh reads it."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    # Tests that need a system package skip with "Debian package NAME" in the reason (require_rtsp,
    # require_browser, the RTMP peer). On a developer's machine that is a skip; in CI it is a failure,
    # so a broken install can never turn the RTSP and browser tests into a green run.
    report = yield
    if report.skipped and not hasattr(report, "wasxfail") and in_ci():
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        if "Debian package" in reason:
            report.outcome = "failed"
            report.longrepr = f"CI is set, so a missing system package is a failure, not a skip: {reason}"
    return report
