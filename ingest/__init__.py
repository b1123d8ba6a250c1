"""Ingest: video sources (files, webcams, network streams) as timestamped temporal patches.

    from longwatch.ingest import open_stream
    with open_stream("rtsp://cam/live", cfg.ingest, on_state=print) as stream:
        for patch in stream:          # TemporalPatch: frames uint8 [2, H, W, 3], t_start, t_end, gap_before
            ...
        stream.stats()                # dropped frames, lag behind the live edge, fps, reconnects

Names are imported lazily, so `import ingest.config` stays free of decoders and torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "open_source": "longwatch.ingest.stream", "open_stream": "longwatch.ingest.stream",
    "PatchStream": "longwatch.ingest.stream", "StreamStats": "longwatch.ingest.stream",
    "Source": "longwatch.ingest.sources", "IngestError": "longwatch.ingest.errors",
    "TemporalPatch": "longwatch.ingest.patches", "SourceState": "longwatch.ingest.patches", "IngestConfig": "longwatch.ingest.config",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ingest' has no attribute {name!r}")
