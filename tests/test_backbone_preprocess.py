"""Temporal-patch preprocessing: sizes, patch order, equality with transformers' processor (golden; live on GPU)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from longwatch.backbone.inputs import FACTOR, PromptLayout, patchify, preprocess_patch, vision_tokens
from longwatch.backbone.tokenizer import load_offline_tokenizer
from longwatch.eval.golden_preprocess import codes_to_values, crc32, make_frames, processor_outputs, prompt_outputs
from longwatch.ingest.patches import MULTIPLE, PatchBuilder, TemporalPatch, resize_frames, snap_frame_size

# transformers' Qwen3VLVideoProcessor / Qwen3VLProcessor outputs, written by eval/golden_preprocess.py in a side
# venv with torchvision (the command and versions are in the .json). Inputs are regenerated from seeds.
GOLDEN = Path(__file__).parent / "golden" / "preprocess_qwen3vl"
META = json.loads(GOLDEN.with_suffix(".json").read_text())

# Pixel tolerance against the processor. Storage is lossless (uint8 k, value (k - 127.5) / 127.5, checked bit
# for bit when written); the uint8 bicubic antialiased resize gave identical bytes in torch 2.13 (ours) and
# 2.14.1 (the processor's) on every case; patchify does the processor's float32 ops. Measured max |diff|: 0
# (5.9e-8, 1 ulp, while patchify computed (x/255 - 0.5)/0.5). 1e-6 leaves room for float reordering only:
# a change in resize, mean/std or patch order moves a value by at least one uint8 step, 1/127.5 = 7.8e-3.
PIXEL_ATOL = 1e-6


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


def test_bad_frames_rejected():
    with pytest.raises(ValueError, match="uint8"):
        resize_frames(np.zeros((2, 8, 8, 3), dtype=np.float32), (32, 32))
    with pytest.raises(ValueError, match="patchify"):
        patchify(torch.zeros(3, 3, 32, 32, dtype=torch.uint8))




def _stream_pixels(frames: np.ndarray, frame_size: str) -> tuple[torch.Tensor, list[int]]:
    """What our stream feeds the ViT for a clip: PatchBuilder's size and pairs (an odd last frame paired with
    itself), then preprocess_patch per temporal patch. Returns (pixel_values, the clip's grid_thw)."""
    builder = PatchBuilder(frame_size)
    pairs = [p for i, f in enumerate(frames) if (p := builder.add(f, i / 2)) is not None]
    if (last := builder.flush()) is not None:
        pairs.append(last)
    outs = [preprocess_patch(pair, builder.size) for pair, _ in pairs]
    assert all(grid == outs[0][1] for _, grid in outs)
    return torch.cat([pv for pv, _ in outs]), [len(outs), *outs[0][1][1:]]


def _case_frames(case: dict) -> np.ndarray:
    frames = make_frames(case["pattern"], case["seed"], case["frames"], case["height"], case["width"])
    assert crc32(frames) == case["frames_crc32"], "inputs no longer regenerate as when the golden file was written"
    return frames


@pytest.mark.parametrize("case", META["cases"], ids=lambda c: c["name"])
def test_equals_golden_processor_outputs(case):
    """Our stream's frame size, grid and pixel values equal transformers' processor's on the same clip."""
    frames = _case_frames(case)
    assert snap_frame_size(case["height"], case["width"], case["frame_size"]) == tuple(case["size"])
    ours, grid = _stream_pixels(frames, case["frame_size"])
    assert grid == case["video_grid_thw"]
    theirs = codes_to_values(np.load(GOLDEN.with_suffix(".npz"))[case["name"]])
    assert ours.shape == theirs.shape
    diff = np.abs(ours.numpy() - theirs)
    row, col = (int(v) for v in np.unravel_index(diff.argmax(), diff.shape))
    assert diff.max() <= PIXEL_ATOL, (f"max |ours - processor| = {diff.max():.3g} at row {row}, col {col}; "
                                      f"{int((diff > PIXEL_ATOL).sum())} of {diff.size} values off")


@pytest.mark.parametrize("name", sorted(META["prompts"]))
def test_timestamps_equal_golden_processor_prompt(name):
    """Per-patch timestamp text and tokens equal Qwen3VLProcessor's expansion of the video item.

    transformers 5.23 wraps all patches in one more <|vision_start|> ... <|vision_end|> (our layout is 4.57's,
    see backbone/inputs.py): inside that pair the ids are the same.
    """
    golden = META["prompts"][name]
    tok = load_offline_tokenizer()
    layout = PromptLayout(tok)
    idx, fps = golden["indices"], golden["fps"]
    if len(idx) % 2:
        idx = idx + idx[-1:]  # the processor repeats the last index, PatchBuilder.flush the last frame
    grid = (1, *golden["video_grid_thw"][1:])
    pv = torch.zeros(grid[1] * grid[2], 1536)
    ours = []
    for i in range(0, len(idx), 2):
        pts = (idx[i] / fps, idx[i + 1] / fps)
        p = TemporalPatch(i // 2, np.zeros((2, 32, 32, 3), np.uint8), pts, pts[0], pts[1] + 1 / fps)
        ours += layout.patch(pv, grid, p.t_start, p.t_end, p.t_mid).input_ids.tolist()
    assert golden["input_ids"][0] == layout.vision_start and golden["input_ids"][-1] == layout.vision_end
    assert tok.decode(ours) == tok.decode(golden["input_ids"][1:-1])
    assert ours == golden["input_ids"][1:-1]


def _torchvision_works() -> bool:
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        import torchvision.transforms.v2.functional  # noqa: F401
    except Exception:
        return False
    return True


needs_torchvision = pytest.mark.skipif(
    not _torchvision_works(),
    reason="needs a working torchvision for transformers' video processor (none matches .venv's torch+cpu; "
           "CI compares with tests/golden/preprocess_qwen3vl instead)")


@pytest.mark.gpu
@needs_torchvision
@pytest.mark.parametrize("case", META["cases"], ids=lambda c: c["name"])
def test_equals_live_transformers_video_processor(case):
    """The golden comparison, live: whatever torch/torchvision/transformers this machine has, bit for bit."""
    frames = _case_frames(case)
    theirs, grid = processor_outputs(frames, case["max_pixels"])
    ours, our_grid = _stream_pixels(frames, case["frame_size"])
    assert our_grid == grid
    assert torch.equal(theirs, ours)


@pytest.mark.gpu
@needs_torchvision
@pytest.mark.parametrize("name", sorted(META["prompts"]))
def test_golden_prompt_still_what_transformers_builds(name):
    """The stored prompt expansion is still what this machine's transformers builds."""
    golden = META["prompts"][name]
    assert prompt_outputs(golden["indices"], golden["fps"]) == golden
