"""The `torchcodec` file reader (transformers' video decoder), imported only when that reader is chosen.

Timestamps come first, from FFmpeg's demuxer through PyAV (packets only, nothing decoded): `select` sees every
frame's time in presentation order, as with the other readers. torchcodec then decodes only the kept frames
by index (its "exact" seek mode indexes frames in presentation order too), in batches, straight to RGB.
A file whose packet count and torchcodec's frame count disagree fails before `select` runs, so the registry
falls back to the next reader with a warning instead of sampling the wrong frames.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import av
import numpy as np

from longwatch.ingest.errors import IngestError
from longwatch.ingest.sources import fetch_selected

if TYPE_CHECKING:
    from longwatch.ingest.sources import Frame, ReadStats, Select


def packet_times(path: str) -> np.ndarray:
    """Presentation times (seconds, sorted, from the first) of the first video stream's frames, by demuxing."""
    with av.open(path, metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        pts = [p.pts for p in container.demux(stream) if p.pts is not None and p.size]
        base = float(stream.time_base or 0)
    times = np.sort(np.asarray(pts, dtype=np.float64)) * base
    return times - times[0] if len(times) else times


def video_decoder_class() -> type:
    """torchcodec's VideoDecoder; ImportError saying why when torchcodec is absent or does not load here.

    torchcodec pairs with one torch minor release (0.13 with torch 2.13) and loads FFmpeg's shared libraries
    (4 to 8); a mismatch shows as a RuntimeError on import, turned here into the ImportError the registry expects.
    """
    try:
        from torchcodec.decoders import VideoDecoder
    except ImportError as e:
        raise ImportError(f"torchcodec is not installed (pip install 'longwatch[torchcodec]'): {e}") from None
    except RuntimeError:
        from importlib.metadata import PackageNotFoundError, version

        import torch

        try:
            tc = f"torchcodec {version('torchcodec')}"
        except PackageNotFoundError:
            tc = "torchcodec"
        raise ImportError(f"{tc} does not load with torch {torch.__version__}: it is built for another torch "
                          "release, or FFmpeg 4 to 8 shared libraries are missing") from None
    return VideoDecoder


def read_torchcodec(path: str, select: Select, stats: ReadStats, rate: float) -> Iterator[Frame]:
    """Random access like decord: all timestamps from the demuxer, then only the kept frames decoded."""
    VideoDecoder = video_decoder_class()  # noqa: N806 (a class)
    try:
        decoder = VideoDecoder(path, dimension_order="NHWC", seek_mode="exact", num_ffmpeg_threads=0)
    except (RuntimeError, ValueError) as e:
        raise IngestError(f"{path}: torchcodec cannot read it ({e})", code="not_video") from None
    stamps = packet_times(path)
    if len(stamps) != len(decoder):  # e.g. packets without pts: index and time would not line up
        raise RuntimeError(f"torchcodec counts {len(decoder)} frames, the demuxer {len(stamps)} timed packets")
    yield from fetch_selected(stamps, select, stats, lambda idx: decoder.get_frames_at(idx).data.numpy(), RuntimeError)
