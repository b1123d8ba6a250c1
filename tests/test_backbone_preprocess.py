"""Temporal-patch preprocessing: sizes, patch order, golden values, and equality with transformers' processor."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from longwatch.backbone.inputs import FACTOR, patchify, preprocess_patch, vision_tokens
from longwatch.ingest.patches import MULTIPLE, resize_frames, snap_frame_size


def _pattern(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([np.stack([(x * 2 + t * 7) % 256, (y * 3) % 256, ((x + y) * 5 + t) % 256], -1)
                     for t in range(2)]).astype(np.uint8)


@pytest.mark.parametrize("h,w,spec,expected", [
    (448, 448, "448", (448, 448)),
    (720, 1280, "448", (320, 608)),   # aspect kept inside a 448x448 pixel budget
    (360, 640, "360x640", (352, 640)),  # exact size, snapped to multiples of 32
    (100, 100, "16x16", (32, 32)),      # never below one merged patch
])
def test_snap_frame_size(h, w, spec, expected):
    assert snap_frame_size(h, w, spec) == expected


def test_ingest_snaps_to_what_the_backbone_patchifies():
    # ingest resizes frames before the backbone sees them: its multiple is the ViT patch times the merge
    assert MULTIPLE == FACTOR == 32


def test_token_counts_match_design():
    # DESIGN.md: 448x448 -> 196 tokens, 224x224 -> 49, 360x640 -> 220, 720x1280 -> 880
    assert vision_tokens((448, 448)) == 196
    assert vision_tokens((224, 224)) == 49
    assert vision_tokens(snap_frame_size(360, 640, "360x640")) == 220
    assert vision_tokens(snap_frame_size(720, 1280, "720x1280")) == 880


def test_patch_order_against_explicit_loops():
    """No resize: every value is (x/255 - 0.5)/0.5 at the row and column Qwen3-VL's processor uses."""
    f = _pattern(64, 96)
    pv, grid = preprocess_patch(f, (64, 96))
    assert grid == (1, 4, 6) and pv.shape == (24, 1536)
    expected = np.empty((24, 1536), dtype=np.float32)
    row = 0
    for bh in range(4 // 2):
        for bw in range(6 // 2):
            for mh in range(2):
                for mw in range(2):
                    ph, pw = bh * 2 + mh, bw * 2 + mw
                    col = 0
                    for c in range(3):
                        for t in range(2):
                            for py in range(16):
                                for px in range(16):
                                    v = f[t, ph * 16 + py, pw * 16 + px, c]
                                    expected[row, col] = (v / 255.0 - 0.5) / 0.5
                                    col += 1
                    row += 1
    np.testing.assert_allclose(pv.numpy(), expected, atol=1e-6)


def test_golden_values_with_resize():
    """Regression guard for resize + normalise + patchify (values recorded from this implementation)."""
    pv, grid = preprocess_patch(_pattern(90, 130), (64, 96))
    assert grid == (1, 4, 6)
    assert pv.sum().item() == pytest.approx(-562.1721, abs=1e-2)
    np.testing.assert_allclose(pv[0, :5].numpy(), [-1.0, -0.97647059, -0.95294118, -0.92941177, -0.9137255], atol=1e-6)
    np.testing.assert_allclose(pv[17, 700:704].numpy(), [0.42745101] * 4, atol=1e-6)
    np.testing.assert_allclose(pv[-1, -3:].numpy(), [-0.59215689, -0.54509807, -0.49019605], atol=1e-6)


def test_bad_frames_rejected():
    with pytest.raises(ValueError, match="uint8"):
        resize_frames(np.zeros((2, 8, 8, 3), dtype=np.float32), (32, 32))
    with pytest.raises(ValueError, match="patchify"):
        patchify(torch.zeros(3, 3, 32, 32, dtype=torch.uint8))


def _torchvision_works() -> bool:
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        import torchvision.transforms.v2.functional  # noqa: F401
    except Exception:
        return False
    return True


@pytest.mark.skipif(not _torchvision_works(),
                    reason="needs a working torchvision (transformers' video processor); PyPI has no CPU build")
def test_equals_transformers_video_processor():
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor, smart_resize
    from transformers.video_utils import VideoMetadata

    frames = _pattern(90, 130)
    proc = Qwen3VLVideoProcessor()
    h, w = smart_resize(2, 90, 130, factor=32, min_pixels=proc.size["shortest_edge"],
                        max_pixels=proc.size["longest_edge"])
    out = proc(videos=[torch.from_numpy(frames).permute(0, 3, 1, 2)], do_sample_frames=False,
               video_metadata=[VideoMetadata(total_num_frames=2, fps=2, frames_indices=[0, 1])],
               cap_pixels_per_frame=False, return_tensors="pt")
    ours, grid = preprocess_patch(frames, (h, w))
    assert out["video_grid_thw"].tolist() == [list(grid)]
    assert torch.equal(out["pixel_values_videos"].float(), ours)
