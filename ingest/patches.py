"""Pair sampled frames into temporal patches at the stream's fixed per-frame size (Qwen3-VL's resize)."""

from __future__ import annotations

import numpy as np

from longwatch.ingest.resize import resize_frames, snap_frame_size


class PatchBuilder:
    """Resizes kept frames to the stream's fixed size (chosen from the first frame) and pairs them.

    add() returns (frames uint8 [2, H, W, 3], (t0, t1)) once two frames are held, else None.
    Frames are resized as they arrive, so an 8K source never holds more than one full frame.
    """

    def __init__(self, frame_size: str) -> None:
        self.frame_size = frame_size
        self.size: tuple[int, int] | None = None
        self._held: tuple[np.ndarray, float] | None = None

    def add(self, frame: np.ndarray, t: float) -> tuple[np.ndarray, tuple[float, float]] | None:
        if self.size is None:
            self.size = snap_frame_size(frame.shape[0], frame.shape[1], self.frame_size)
        small = resize_frames(frame[None], self.size)[0].permute(1, 2, 0).numpy()  # [3,h,w] -> [h,w,3]
        if self._held is None:
            self._held = (small, t)
            return None
        (first, t0), self._held = self._held, None
        return np.stack([first, small]), (t0, t)

    def drop_held(self) -> None:
        """Forget an unpaired frame (before a gap, so no patch spans a reconnect)."""
        self._held = None

    def flush(self) -> tuple[np.ndarray, tuple[float, float]] | None:
        """At the end of a file: pair the last odd frame with itself, as Qwen3-VL's processor pads."""
        if self._held is None:
            return None
        (frame, t), self._held = self._held, None
        return np.stack([frame, frame]), (t, t)
