"""Evidence thumbnails: small JPEGs, bounded in count, covering the whole stream after thinning."""

from __future__ import annotations

import cv2
import numpy as np

from longwatch.app.ui.thumbs import THUMB_WIDTH, Thumbnails, data_uri


def frame(value: int) -> np.ndarray:
    return np.full((240, 320, 3), value, np.uint8)


def test_a_thumbnail_is_a_small_jpeg_that_keeps_the_picture():
    thumbs = Thumbnails()
    img = np.zeros((240, 320, 3), np.uint8)
    img[:, :160] = (255, 0, 0)  # left half red
    thumbs.add(0.0, img)
    jpeg = thumbs.nearest(0.0)
    assert jpeg is not None and len(jpeg) < 4000
    back = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert back.shape == (72, THUMB_WIDTH, 3)
    assert back[36, 10, 0] > 200 and back[36, 10, 2] < 60 and back[36, 90].max() < 60
    assert data_uri(jpeg).startswith("data:image/jpeg;base64,")


def test_count_stays_bounded_and_covers_the_whole_stream():
    thumbs = Thumbnails(capacity=16)
    for i in range(1000):
        thumbs.add(float(i), frame(i % 256))
    assert len(thumbs) <= 16
    times = thumbs._times
    assert times[0] == 0.0 and times[-1] > 900  # thinned evenly, not a window of the newest
    gaps = np.diff(times)
    assert gaps.max() <= 2 * gaps.min()


def test_nearest_returns_the_closest_stored_time():
    thumbs = Thumbnails()
    for t, v in ((0.0, 10), (10.0, 120), (20.0, 240)):
        thumbs.add(t, frame(v))

    def decode(jpeg: bytes) -> int:
        return int(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE).mean())

    assert abs(decode(thumbs.nearest(12.0)) - 120) < 5
    assert abs(decode(thumbs.nearest(16.0)) - 240) < 5
    assert abs(decode(thumbs.nearest(-5.0)) - 10) < 5
    assert Thumbnails().nearest(3.0) is None
