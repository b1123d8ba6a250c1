"""A generated sample video with visible text signs at known times (the offline demo and tests use it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

WORDS = ("OPEN", "CLOSED", "SALE", "EXIT", "PARKING", "DELIVERY", "TICKETS", "WELCOME")


@dataclass(frozen=True)
class Sign:
    t_start: float
    t_end: float
    text: str


def draw_frame(t: float, size: tuple[int, int], text: str | None) -> np.ndarray:
    """One RGB frame at time t: drifting gradient, a moving disc, an optional white sign with `text`, a clock."""
    h, w = size
    y, x = np.mgrid[0:h, 0:w]
    # a slowly drifting colour gradient so consecutive frames differ, like a real scene
    img = np.stack([(x + 40 * t) % 256, (y + 25 * t) % 256, np.full_like(x, 96)], -1).astype(np.uint8)
    cx = int((0.5 + 0.35 * np.sin(t / 3.0)) * w)
    cv2.circle(img, (cx, int(0.8 * h)), max(4, h // 16), (240, 240, 60), -1)  # a moving distractor
    if text is not None:
        scale = max(0.5, w / 400)
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 2)
        x0, y0 = (w - tw) // 2, h // 3
        cv2.rectangle(img, (x0 - 10, y0 - th - 10), (x0 + tw + 10, y0 + 10), (255, 255, 255), -1)
        cv2.putText(img, text, (x0, y0), cv2.FONT_HERSHEY_SIMPLEX, scale, (200, 0, 0), 2, cv2.LINE_AA)
    cv2.putText(img, f"{int(t) // 60:02d}:{int(t) % 60:02d}", (8, h - 10), cv2.FONT_HERSHEY_SIMPLEX,
                max(0.4, w / 900), (0, 0, 0), 1, cv2.LINE_AA)
    return img


def plan_signs(seconds: float = 40.0, sign_every: float = 10.0, sign_for: float = 4.0) -> list[Sign]:
    """The signs `make_sample_video` draws with these settings, without drawing anything."""
    return [Sign(float(t), float(min(seconds, t + sign_for)), WORDS[i % len(WORDS)])
            for i, t in enumerate(np.arange(2.0, seconds, sign_every))]


def make_sample_video(path: str | Path, seconds: float = 40.0, size: tuple[int, int] = (240, 320),
                      fps: int = 10, sign_every: float = 10.0, sign_for: float = 4.0) -> list[Sign]:
    """Write an H.264 MP4 of `seconds` where a sign with a word shows for `sign_for` s every `sign_every` s.

    Returns the signs with their times, so questions like "what did the sign say at 00:12?" have answers.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    signs = plan_signs(seconds, sign_every, sign_for)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for i in range(int(seconds * fps)):
            t = i / fps
            sign = next((s for s in signs if s.t_start <= t < s.t_end), None)
            frame = av.VideoFrame.from_ndarray(draw_frame(t, size, sign.text if sign else None), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return signs
