"""Draw NeedleStream videos (OpenCV) and write them with PyAV; `make_bench` writes a whole benchmark folder.

Frame i shows time t = i / fps; a needle is on screen for t0 <= t < t1. The background drifts and grey
distractors move, so consecutive frames differ even without needles; needles are saturated colours
(distractors are grey, so a colour on screen always belongs to a needle).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import av
import cv2
import numpy as np

from longwatch.eval.needlestream import CELLS, COLORS, STAR_COLOR, PRESETS, SEQ_STEP_S, Needle, VideoPlan, annotation, plan_bench

log = logging.getLogger(__name__)
CODECS = ("libx264", "mpeg4")


def _background(plan: VideoPlan) -> np.ndarray:
    """A smooth grey texture twice the frame size (rolled to drift)."""
    h, w = plan.size
    rng = np.random.default_rng(plan.motion_seed)
    y, x = np.mgrid[0 : 2 * h, 0 : 2 * w].astype(np.float32)
    v = np.zeros_like(x)
    for _ in range(4):
        fy, fx = rng.integers(1, 4, size=2)
        v += np.sin(2 * np.pi * (fy * y / (2 * h) + fx * x / (2 * w)) + rng.uniform(0, 2 * np.pi))
    grey = (100 + 18 * v).clip(40, 170).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def cell_center(cell: int, size: tuple[int, int]) -> tuple[int, int]:
    """(x, y) pixel centre of grid cell 0..8 (row-major, top left first)."""
    h, w = size
    return int((cell % 3 + 0.5) * w / 3), int((cell // 3 + 0.5) * h / 3)


def _shape(img: np.ndarray, shape: str, color: tuple[int, int, int], center: tuple[int, int], r: int) -> None:
    x, y = center
    if shape == "circle":
        cv2.circle(img, (x, y), r, color, -1, cv2.LINE_AA)
    elif shape == "square":
        cv2.rectangle(img, (x - r, y - r), (x + r, y + r), color, -1)
    else:
        pts = np.array([[x, y - r], [x - r, y + int(0.8 * r)], [x + r, y + int(0.8 * r)]], np.int32)
        cv2.fillPoly(img, [pts], color, cv2.LINE_AA)


def _star(img: np.ndarray, center: tuple[int, int], r: int) -> None:
    pts = [(center[0] + (r if k % 2 == 0 else r * 0.45) * math.sin(k * math.pi / 5),
            center[1] - (r if k % 2 == 0 else r * 0.45) * math.cos(k * math.pi / 5)) for k in range(10)]
    cv2.fillPoly(img, [np.array(pts, np.int32)], STAR_COLOR, cv2.LINE_AA)


def _sign(img: np.ndarray, word: str) -> None:
    h, w = img.shape[:2]
    x0, x1, y0, y1 = int(0.15 * w), int(0.85 * w), int(0.38 * h), int(0.62 * h)
    cv2.rectangle(img, (x0, y0), (x1, y1), (255, 255, 255), -1)
    cv2.rectangle(img, (x0, y0), (x1, y1), (0, 0, 0), max(1, h // 112))
    font, thick = cv2.FONT_HERSHEY_DUPLEX, max(1, h // 112)
    (tw, th), _ = cv2.getTextSize(word, font, 1.0, thick)
    scale = min(0.6 * w / tw, 0.16 * h / th)
    (tw, th), _ = cv2.getTextSize(word, font, scale, thick)
    cv2.putText(img, word, ((w - tw) // 2, (h + th) // 2), font, scale, (0, 0, 0), thick, cv2.LINE_AA)


def _sign_v2(img: np.ndarray, word: str) -> None:
    """Version 2: the sign spans most of the frame and the letters are bold, so that at 128x128 a letter
    covers about one 16x16 ViT patch (version 1's 20-pixel text was not learnable in short trials)."""
    h, w = img.shape[:2]
    x0, x1, y0, y1 = int(0.04 * w), int(0.96 * w), int(0.28 * h), int(0.72 * h)
    cv2.rectangle(img, (x0, y0), (x1, y1), (255, 255, 255), -1)
    font, thick = cv2.FONT_HERSHEY_DUPLEX, max(2, h // 40)
    (tw, th), _ = cv2.getTextSize(word, font, 1.0, thick)
    scale = min(0.86 * w / tw, 0.30 * h / th)
    (tw, th), _ = cv2.getTextSize(word, font, scale, thick)
    cv2.putText(img, word, ((w - tw) // 2, (h + th) // 2), font, scale, (0, 0, 0), thick, cv2.LINE_AA)


def draw_needle(img: np.ndarray, n: Needle, t: float, version: int = 1) -> None:
    h, w = img.shape[:2]
    m = min(h, w)
    if n.kind == "sign":
        (_sign_v2 if version >= 2 else _sign)(img, n.word or "")
    elif n.kind == "shape":
        _shape(img, n.shape or "circle", COLORS[n.color or "red"], cell_center(n.cell or 0, (h, w)), int(0.11 * m))
    elif n.kind == "star":
        _star(img, (w // 2, h // 2), int(0.2 * m))
    elif n.kind == "sequence":
        item = n.items[min(len(n.items) - 1, int((t - n.t0) // SEQ_STEP_S))]
        _shape(img, item["shape"], COLORS[item["color"]], (w // 2, h // 2), int(0.2 * m))


def render_frame(plan: VideoPlan, t: float, background: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 [H, W, 3] at time t (deterministic)."""
    h, w = plan.size
    bg = _background(plan) if background is None else background
    dy, dx = int(6 * t) % h, int(9 * t) % w  # drift
    img = np.ascontiguousarray(bg[dy : dy + h, dx : dx + w])
    for k in range(4):  # moving grey distractors
        cx = int(w * (0.5 + 0.4 * math.sin(0.5 * t * (k + 1) + k)))
        cy = int(h * (0.5 + 0.4 * math.cos(0.37 * t * (k + 2) + 2 * k)))
        shade = 60 + 40 * k
        _shape(img, ("circle", "square", "triangle", "circle")[k], (shade, shade, shade), (cx, cy), int(0.06 * min(h, w)))
    for i in (1, 2):  # faint 3x3 grid so cells have a visible reference
        cv2.line(img, (i * w // 3, 0), (i * w // 3, h), (185, 185, 185), 1)
        cv2.line(img, (0, i * h // 3), (w, i * h // 3), (185, 185, 185), 1)
    for n in plan.needles:
        if n.t0 <= t < n.t1:
            draw_needle(img, n, t, plan.version)
    return img


def _open_stream(container: av.container.OutputContainer, plan: VideoPlan):
    for codec in CODECS:
        try:
            stream = container.add_stream(codec, rate=plan.fps)
        except (av.FFmpegError, ValueError) as e:
            log.warning("video codec %s unavailable (%s); trying the next one", codec, e)
            continue
        if codec != CODECS[0]:
            log.warning("writing NeedleStream videos with %s instead of %s", codec, CODECS[0])
        stream.height, stream.width = plan.size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "16", "preset": "veryfast"} if codec == "libx264" else {"qscale": "2"}
        return stream
    raise RuntimeError(f"no video encoder among {CODECS}")


def write_video(plan: VideoPlan, path: str | Path) -> None:
    """Encode the planned video to `path` (mp4)."""
    bg = _background(plan)
    n = int(round(plan.duration_s * plan.fps))
    with av.open(str(path), "w") as container:
        stream = _open_stream(container, plan)
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(render_frame(plan, i / plan.fps, bg), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_bench(preset: str, seed: int, out: str | Path, progress: bool = True, videos: int | None = None) -> Path:
    """Write `out`/annotations.json and `out`/videos/*.mp4; returns the annotation path."""
    from tqdm import tqdm

    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    plans = plan_bench(preset, seed)[:videos]
    t0 = time.perf_counter()
    records = []
    for plan in tqdm(plans, desc=f"NeedleStream {preset}", unit="video", disable=not progress):
        rel = f"videos/{plan.video_id}.mp4"
        write_video(plan, out / rel)
        records.append(annotation(plan, preset, rel))
    path = out / "annotations.json"
    path.write_text(json.dumps(records, indent=1))
    log.info("wrote %d NeedleStream videos (%s, seed %d) to %s in %.1f s", len(plans), preset, seed, out,
             time.perf_counter() - t0)
    return path


__all__ = ["CELLS", "PRESETS", "cell_center", "make_bench", "render_frame", "write_video"]
