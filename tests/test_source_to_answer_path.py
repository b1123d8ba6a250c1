"""The path from a frame source to an answer stays small: at most 15 files of ingest/backbone/memory, each
under 400 lines, traced through a real `longwatch ask` (the README's Architecture section lists them)."""

from __future__ import annotations

import contextlib
import io
import sys
import threading
from pathlib import Path

import longwatch
from longwatch.app.cli import main
from longwatch.eval.sample_video import make_sample_video

ROOT = Path(longwatch.__file__).resolve().parents[1]
LAYERS = ("ingest", "backbone", "memory")


def trace_ask(args: list[str]) -> set[Path]:
    """Files of the three layers with a function called from the opening of the source (`stream_into`) until
    `MemoryStream.ask` returns, in every thread (the decode thread too)."""
    hits: set[Path] = set()
    on = [False]

    def prof(frame, event, _arg):
        code = frame.f_code
        if event == "return" and on[0] and code.co_name == "ask" and code.co_filename.endswith("memory/stream.py"):
            on[0] = False
        if event != "call":
            return
        if not on[0]:
            if not (code.co_name == "stream_into" and code.co_filename.endswith("app/streaming.py")):
                return
            on[0] = True
        path = Path(code.co_filename)
        if path.is_relative_to(ROOT) and path.relative_to(ROOT).parts[0] in LAYERS:
            hits.add(path)

    threading.setprofile(prof)
    sys.setprofile(prof)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["ask", *args]) == 0
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    return hits


def test_source_to_answer_crosses_at_most_15_files_under_400_lines(tmp_path):
    video = tmp_path / "clip30.mp4"
    make_sample_video(str(video), seconds=30, size=(120, 160), fps=6)  # 30 s: blocks leave the window
    files = trace_ask([str(video), "What did the sign say at 00:03?", "--model", "tiny", "--policy", "rekv",
                       "--frame-size", "128", "--max-new-tokens", "4", "--json"])
    names = sorted(str(f.relative_to(ROOT)) for f in files)
    assert {"memory/retrieval.py", "memory/store.py", "ingest/sources.py", "backbone/model.py"} <= set(names)
    assert len(files) <= 15, names
    lines = {str(f.relative_to(ROOT)): len(f.read_text().splitlines()) for f in files}
    assert max(lines.values()) <= 400, lines
