"""Glue for the CLI verbs: stream a video source into a MemoryStream with progress, then answer."""

from __future__ import annotations

import time
from typing import Callable

from longwatch.app.config import Config
from longwatch.app.cli import UserError


def open_memory(bb, cfg: Config, memory_dir: str | None = None, stream_id: str = "cli"):
    from longwatch.memory.stream import MemoryStream

    return MemoryStream(bb, cfg.memory, stream_id=stream_id, memory_dir=memory_dir)


def check_video(source: str, cfg: Config) -> None:
    """Fail fast on a bad video (missing, empty, not a video) before the model loads."""
    from longwatch.ingest.stream import open_source

    open_source(source, cfg.ingest)


def encode_length(duration_s: float | None, until_s: float | None, seconds: float | None) -> float | None:
    """Seconds of stream a run will encode: the shortest of the file's duration, --at and --seconds given."""
    known = [x for x in (duration_s, until_s, seconds) if x is not None]
    return min(known) if known else None


def stream_into(memory, source: str, cfg: Config, until_s: float | None = None, progress: bool | None = False,
                on_patch: Callable | None = None, seconds: float | None = None) -> dict:
    """Ingest `source` into `memory` up to video time `until_s`, or for `seconds` of wall-clock time
    (live sources); returns timing figures. `progress` (eval.progress.shown: None = on a terminal) draws a bar
    on stderr over the stream seconds to encode: the file's duration (up to `until_s`), or `seconds`."""
    from longwatch.eval.progress import advance_to, seconds_bar
    from longwatch.ingest.stream import open_stream

    t0, n = time.perf_counter(), 0
    with open_stream(source, cfg.ingest) as stream:
        info = getattr(stream.source, "info", None)  # files only: what the probe read from the container
        total = encode_length(getattr(info, "duration_s", None), until_s, seconds)
        with seconds_bar(total, "encoding", force=progress) as bar:
            for patch in stream:
                if until_s is not None and patch.t_start >= until_s:
                    break
                if seconds is not None and time.perf_counter() - t0 >= seconds:
                    break
                memory.ingest(patch)
                n += 1
                advance_to(bar, patch.t_end)
                if on_patch is not None:
                    on_patch(patch)
        stats = stream.stats()
    if n == 0:
        raise UserError(f"{source}: no frames could be decoded (a zero-length video?)")
    elapsed = time.perf_counter() - t0
    return {"patches": n, "ingest_s": elapsed, "patches_per_s": n / elapsed if elapsed else 0.0,
            "dropped_frames": getattr(stats, "dropped_frames", 0)}


def answer_dict(ans, ingest: dict | None = None) -> dict:
    """The JSON shape of an answer (ask --json, demo --json)."""
    return {
        "answer": ans.text,
        "ttft_s": round(ans.ttft_s, 4),
        "retrieval_s": round(ans.retrieval_s, 4),
        "prefill_s": round(ans.prefill_s, 4),
        "decode_s": round(ans.decode_s, 4),
        "tokens": len(ans.token_ids),
        "context_tokens": ans.context_tokens,
        "patches": ans.memory["patches"],
        "evidence": [{"block": e.block_id, "t_start": round(e.t_start, 2), "t_end": round(e.t_end, 2),
                      "reason": e.reason, **({"score": round(e.score, 3)} if e.score is not None else {})}
                     for e in ans.evidence if e.reason in ("retrieved", "time", "window", "memory")][:64],
        "memory": ans.memory["tiers"],
        **({"choices": ans.choices} if getattr(ans, "choices", None) else {}),
        **({"ingest": ingest} if ingest else {}),
    }
