"""A synthetic stream of temporal patches generated in memory (no file): minutes of video for benchmarks."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from longwatch.eval.sample_video import WORDS, draw_frame
from longwatch.ingest.patches import TemporalPatch, snap_frame_size


def synthetic_patches(minutes: float, fps: float = 2.0, frame_size: str = "224", source_hw: tuple[int, int] = (360, 640),
                      sign_every_s: float = 30.0, sign_for_s: float = 4.0) -> Iterator[TemporalPatch]:
    """Patches of a drifting scene with a word sign for `sign_for_s` every `sign_every_s` seconds.

    Frames are drawn directly at the stream's fixed size (what ingest would hand over after resizing).
    """
    size = snap_frame_size(*source_hw, frame_size)
    n_frames = int(minutes * 60 * fps)
    step = 1.0 / fps
    for index, i in enumerate(range(0, n_frames - 1, 2)):
        times = (i * step, (i + 1) * step)
        frames = np.stack([draw_frame(t, size, sign_at(t, sign_every_s, sign_for_s)) for t in times])
        yield TemporalPatch(index, frames, times, times[0], times[1] + step)


def sign_at(t: float, every: float = 30.0, duration: float = 4.0) -> str | None:
    """The word on screen at time t, if any (signs start at 2 s, then every `every` seconds)."""
    k = int((t - 2.0) // every)
    if t < 2.0 or t - 2.0 - k * every >= duration:
        return None
    return WORDS[k % len(WORDS)]
