"""Progress where work is long: `ask` draws a bar over the video's length on stderr (stdout's JSON untouched),
and the UI's live panel shows an upload's encoding against its length."""

from __future__ import annotations

import json
import re
import threading

import pytest

from longwatch.app.cli import main
from longwatch.app.ui.panels import source_html
from longwatch.app.worker import IngestWorker, WorkerStatus, source_duration
from longwatch.eval.sample_video import make_sample_video
from longwatch.ingest.config import IngestConfig
from longwatch.ingest.sources import probe
from longwatch.ingest.stream import open_stream


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("progress") / "signs.mp4"
    make_sample_video(path, seconds=6, size=(96, 128), fps=6)
    return str(path)


def _bar_totals(stderr: str) -> set[str]:
    """The totals the `encoding` bar showed ("encoding:  50%|...| 3.0/6.0 s")."""
    return set(re.findall(r"encoding: +\d+%\|[^|]*\| [\d.]+/([\d.]+) s", stderr))


def test_ask_bar_runs_over_the_video_length_and_json_stays_clean(video, capsys):
    duration = probe(video).duration_s
    args = ["ask", video, "What did the sign say?", "--model", "tiny", "--frame-size", "96",
            "--max-new-tokens", "2", "--json", "--progress"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    answer = json.loads(out)  # stdout is exactly one JSON object, progress or not
    assert answer["patches"] > 0
    assert _bar_totals(err) == {f"{duration:.1f}"}
    assert f"{duration:.1f}/{duration:.1f} s" in err  # it reached the end
    assert main([*args[:-1], "--at", "3", "--progress"]) == 0  # --at: the bar stops where the question is asked
    assert _bar_totals(capsys.readouterr().err) == {"3.0"}


def test_ask_without_a_terminal_draws_no_bar(video, capsys):
    assert main(["ask", video, "What did the sign say?", "--model", "tiny", "--frame-size", "96",
                 "--max-new-tokens", "2", "--json"]) == 0
    assert "encoding" not in capsys.readouterr().err  # pytest's stderr is not a terminal


def test_live_panel_shows_an_upload_encoding_against_its_length():
    half = WorkerStatus(kind="upload", source="/tmp/gradio/abc/talk.mp4", state="streaming", patches=10,
                        t_last=20.0, duration_s=40.0, busy=True)
    html = source_html(half)
    assert "<b>encoding</b> 20.0 of 40.0 s (50%) · talk.mp4 · 10 patches" in html
    # the last patch ends a frame period after the file's last frame: never more than 100%
    assert "40.0 of 40.0 s (100%)" in source_html(WorkerStatus(kind="upload", source="talk.mp4", state="ended",
                                                               t_last=40.5, duration_s=40.0, busy=True))
    assert "is in memory" in source_html(WorkerStatus(kind="upload", source="talk.mp4", state="ended",
                                                      t_last=40.5, duration_s=40.0))
    unknown = source_html(WorkerStatus(kind="upload", source="talk.mp4", state="streaming", patches=3, t_last=3.0))
    assert "<b>encoding</b> talk.mp4 · 3 patches, up to" in unknown


class Memory:
    lock = threading.Lock()

    def ingest(self, patch):
        pass

    def stats(self):
        return {}

    def close(self):
        pass


def test_a_file_streams_length_reaches_the_worker_status(video):
    worker = IngestWorker("upload", open_stream(video, IngestConfig(frame_size="96")), Memory())
    try:
        worker.wait(lambda: worker.patches >= 1, 30)
        assert worker.status().duration_s == pytest.approx(probe(video).duration_s)
    finally:
        worker.close()
    assert source_duration(object()) is None  # live sources and test doubles have no length
