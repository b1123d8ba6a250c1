"""Golden frame sizes from qwen-vl-utils itself, for tests/test_ingest_sizing.py (ingest/sizing.py's pixel knobs).

Run once, in a side venv where qwen-vl-utils imports (it needs torchvision, which .venv cannot have), never in CI:

    python3 -m venv /tmp/qvl-venv
    /tmp/qvl-venv/bin/pip install /opt/pypi-more/files/torch-2.14.1-cp311-cp311-manylinux_2_28_x86_64.whl \
        /opt/pypi-more/files/torchvision-0.29.1-cp311-cp311-manylinux_2_28_x86_64.whl qwen-vl-utils==0.0.14
    /tmp/qvl-venv/bin/python eval/golden_sizing.py --out tests/golden/sizing_qwen_vl_utils.json

Two kinds of case. "image": qwen-vl-utils' `smart_resize(height, width, factor=32, min_pixels, max_pixels)`, its
rounding rules alone. "video": its `fetch_video` (image_patch_size=16, Qwen3-VL) on a clip of `total_frames` frames
at `video_fps`, with the element's fps / min_pixels / max_pixels / total_pixels; the frame count is its own
`smart_nframes`, the size the one it resizes to. Nothing is decoded: the reader handed to `fetch_video` returns a
zero-stride tensor of the clip's shape, and its resize only records the size asked for (so a 4K clip costs nothing).
This file imports nothing from longwatch and copies nothing from qwen-vl-utils: it calls it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
import types
from importlib.metadata import version
from pathlib import Path

IMAGE_CASES = [  # (height, width, min_pixels, max_pixels)
    (720, 1280, 131072, 200704),  # 720p in a 448x448 budget: floored when over, 320x576
    (1080, 1920, 131072, 786432),
    (2160, 3840, 131072, 786432),
    (480, 640, 131072, 786432),  # inside the budget: each side to the nearest multiple of 32
    (360, 640, 131072, 786432),
    (240, 320, 131072, 786432),  # under min_pixels: scaled up, ceiled
    (90, 130, 131072, 786432),
    (1280, 720, 131072, 200704),  # portrait
    (37, 211, 4096, 786432),
    (100, 6000, 131072, 200704),  # aspect 60
    (720, 1280, 131072, 131072),  # min = max
    (1000, 1000, 4096, 16384),
    (721, 1283, 200704, 200704),
    (1920, 1080, 262144, 409600),
    (576, 1024, 131072, 786432),
    (2048, 2048, 131072, 786432),
    (3000, 4000, 50176, 100352),
]

VIDEO_CASES = [  # (height, width, video_fps, total_frames, element knobs)
    (720, 1280, 30, 300, {"fps": 2.0}),  # the defaults: 128 to 768 tokens per frame
    (720, 1280, 30, 300, {"fps": 2.0, "max_pixels": 200704}),
    (720, 1280, 30, 300, {"fps": 2.0, "min_pixels": 262144, "max_pixels": 409600}),
    (720, 1280, 30, 300, {"fps": 2.0, "total_pixels": 20_000_000}),  # the total does not bind for 20 frames
    (720, 1280, 30, 300, {"fps": 2.0, "total_pixels": 4_000_000}),  # it does: 400,000 pixels per frame
    (720, 1280, 30, 300, {"fps": 2.0, "total_pixels": 1_000_000}),  # below 1.05 x min_pixels: floored there
    (720, 1280, 30, 3000, {"fps": 2.0, "total_pixels": 20_000_000}),  # 200 frames
    (1080, 1920, 25, 15000, {"fps": 2.0}),  # 10 min: 768 frames, and qwen-vl-utils' default total binds
    (1080, 1920, 25, 15000, {"fps": 2.0, "total_pixels": 117_964_800}),  # that default total, given
    (1080, 1920, 25, 15000, {"fps": 1.0, "total_pixels": 50_000_000}),
    (1080, 1920, 30, 12000, {"fps": 2.0, "total_pixels": 50_000_000, "max_pixels": 200704}),
    (480, 640, 30, 900, {"fps": 0.5}),
    (360, 640, 30, 90, {"fps": 2.0}),  # 3 s: 6 frames
    (240, 320, 15, 30, {"fps": 2.0}),  # 2 s: qwen-vl-utils' minimum of 4 frames
    (2160, 3840, 30, 60, {"fps": 2.0}),  # 4K
    (1280, 720, 30, 600, {"fps": 2.0, "min_pixels": 200704}),
    (720, 1280, 60, 2700, {"fps": 4.0, "max_pixels": 1_000_000}),  # above 768 tokens: capped, with a warning
    (97, 173, 24, 240, {"fps": 2.0}),  # tiny: scaled up to 128 tokens
    (720, 1280, 30, 1800, {"fps": 2.0, "min_pixels": 65536, "max_pixels": 131072, "total_pixels": 9_000_000}),
]


def image_case(vp: types.ModuleType, h: int, w: int, lo: int, hi: int) -> dict:
    rh, rw = vp.smart_resize(h, w, factor=32, min_pixels=lo, max_pixels=hi)
    return {"kind": "image", "height": h, "width": w, "min_pixels": lo, "max_pixels": hi,
            "resized": [int(rh), int(rw)]}


def video_case(vp: types.ModuleType, h: int, w: int, video_fps: float, total_frames: int, knobs: dict) -> dict:
    """One fetch_video call on a clip of `total_frames` frames of h x w at `video_fps`: its frame count and size."""
    import torch

    seen: dict = {}

    def reader(ele: dict):
        n = vp.smart_nframes(ele, total_frames=total_frames, video_fps=video_fps)
        seen["nframes"] = int(n)
        video = torch.zeros(1, 1, 1, 1, dtype=torch.uint8).expand(n, 3, h, w)  # zero strides: no memory
        return video, {"fps": video_fps, "total_num_frames": total_frames}, n / total_frames * video_fps

    def resize(video, size, **_kw):  # stands in for torchvision's: records the size fetch_video asks for
        seen["resized"] = [int(s) for s in size]
        return torch.zeros(1)

    vp.VIDEO_READER_BACKENDS["golden"] = reader
    vp.transforms = types.SimpleNamespace(functional=types.SimpleNamespace(resize=resize))
    vp.fetch_video({"video": "golden.mp4", **knobs}, image_patch_size=16)
    return {"kind": "video", "height": h, "width": w, "video_fps": video_fps, "total_frames": total_frames,
            **{k: knobs.get(k) for k in ("fps", "min_pixels", "max_pixels", "total_pixels")}, **seen}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    os.environ["FORCE_QWENVL_VIDEO_READER"] = "golden"  # read when qwen_vl_utils is imported
    from qwen_vl_utils import vision_process as vp

    cases = [image_case(vp, *c) for c in IMAGE_CASES] + [video_case(vp, *c) for c in VIDEO_CASES]
    out = {
        "what": "qwen-vl-utils' own smart_resize (factor 32) and fetch_video sizing (image_patch_size 16, Qwen3-VL)",
        "command": shlex.join([sys.executable, *sys.argv]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {"python": platform.python_version(), **{p: version(p) for p in
                                                                ("qwen-vl-utils", "torch", "torchvision")}},
        "constants": {k: getattr(vp, k) for k in ("VIDEO_MIN_TOKEN_NUM", "VIDEO_MAX_TOKEN_NUM", "FRAME_FACTOR",
                                                   "FPS_MIN_FRAMES", "FPS_MAX_FRAMES", "MODEL_SEQ_LEN")},
        "cases": cases,
    }
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"{len(cases)} cases -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
