"""Open a source by name and stream its temporal patches: the entry points for the app and the memory layer."""

from __future__ import annotations

from longwatch.ingest.config import IngestConfig
from longwatch.ingest.network import NetworkSource
from longwatch.ingest.sources import FileSource, Source, WebcamSource
from longwatch.ingest.stream import PatchStream, StateCallback
from longwatch.ingest.uri import parse_source


def open_source(source: str | int, cfg: IngestConfig | None = None) -> Source:
    """A Source for a file path, a webcam index (0, /dev/video0) or a URL (rtsp, rtmp, http(s), HLS).

    Files are probed here, so a bad file raises IngestError at once; network sources connect lazily,
    on PatchStream's thread, and report problems through its state.
    """
    cfg = cfg or IngestConfig()
    spec = parse_source(source)
    if spec.kind == "file":
        return FileSource(str(spec.target), cfg)
    if spec.kind == "webcam":
        return WebcamSource(spec.target, cfg)
    return NetworkSource(str(spec.target), spec.scheme, cfg)


def open_stream(source: str | int, cfg: IngestConfig | None = None,
                on_state: StateCallback | None = None) -> PatchStream:
    """Start decoding `source` into TemporalPatches on a background thread (see PatchStream)."""
    cfg = cfg or IngestConfig()
    return PatchStream(open_source(source, cfg), cfg, on_state)
