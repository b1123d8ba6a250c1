"""`longwatch bench rtsp-soak`: impossible settings stop it at start; a short real soak meets its targets."""

from __future__ import annotations

import json
import time

import pytest

from longwatch.app.cli import main
from longwatch.eval import bench_rtsp_soak, rtsp_peer
from tests.ingest_fixtures import make_video, require_rtsp


@pytest.mark.parametrize("argv, message", [
    (["--restarts", "0"], "--restarts must be >= 1, got 0"),
    (["--up-s", "0"], "--up-s must be > 0 seconds, got 0.0"),
    (["--down-s", "-1"], "--down-s must be > 0 seconds, got -1.0"),
    (["--down-s", "6"], "--down-s 6 is not below --within-s 5"),
    (["--port", "70000"], "--port must be in [0, 65535], got 70000"),
    (["--video", "/nonexistent/clip.mp4"], "--video /nonexistent/clip.mp4: no such file"),
])
def test_impossible_settings_fail_at_start_naming_the_setting(argv, message, tmp_path, capsys):
    t0 = time.monotonic()
    rc = main(["bench", "rtsp-soak", *argv, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"longwatch: error: {message}") and err.count("\n") == 1
    assert time.monotonic() - t0 < 5 and not (tmp_path / "out").exists()  # nothing started, nothing written


def test_a_video_too_short_for_the_settings_is_refused(tmp_path, capsys):
    short = make_video(tmp_path / "short.mp4", seconds=4, fps=10)
    assert main(["bench", "rtsp-soak", "--video", str(short), "--out", str(tmp_path)]) == 2
    assert "is shorter than 13 s (--up-s + --within-s + 5)" in capsys.readouterr().err


def test_a_missing_rtsp_server_is_named(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(rtsp_peer, "SYSTEM_PYTHON", "/nonexistent/python3")
    assert main(["bench", "rtsp-soak", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "the RTSP server cannot run here: missing Debian package /nonexistent/python3" in err


def test_the_figures_are_computed_from_what_ingest_printed():
    # made-up arrival times: kill at 10.0, server back at 11.2, streaming at 12.0, first patch at 12.4
    def patch(i, t0, gap=0.0):
        return {"type": "patch", "index": i, "t_start": t0, "t_end": t0 + 1.0, "gap_before": gap}

    events = [(9.0, patch(0, 0.0)), (10.1, {"type": "state", "state": "reconnecting"}),
              (10.6, {"type": "state", "state": "reconnecting"}), (10.7, patch(1, 1.0)),  # queued before the kill
              (12.0, {"type": "state", "state": "streaming"}), (12.4, patch(2, 3.6, gap=1.6))]
    o = bench_rtsp_soak.outage(events, kill_t=10.0, back_t=11.2, within_s=5.0, period=0.5)
    assert (o["outage_s"], o["after_server_s"], o["patch"], o["reconnect_attempts"]) == (2.4, 1.2, 2, 2)
    assert o["within_target"] and o["gap_recorded"]  # 1.6 s recorded >= 1.2 s down - one 0.5 s period
    assert not bench_rtsp_soak.outage(events, 10.0, 11.2, within_s=2.0, period=0.5)["within_target"]
    assert not bench_rtsp_soak.outage(events[:4], 10.0, 11.2, 5.0, 0.5)["resumed"]
    patches = [r for _, r in events if r["type"] == "patch"]
    assert bench_rtsp_soak.timeline(patches, 0.5)["monotonic"]
    patches[2] = patch(2, 1.4)  # starts before the previous patch's second frame (1.5 s)
    assert bench_rtsp_soak.timeline(patches, 0.5)["backwards_steps"] == 1


@pytest.mark.rtsp
@pytest.mark.slow  # ~20 s; a restart's reconnect, gap and clock are in the default run (test_ingest_rtsp)
def test_two_restarts_resume_record_their_gaps_and_keep_time(tmp_path, capsys):
    require_rtsp()
    rc = main(["bench", "rtsp-soak", "--restarts", "2", "--up-s", "1", "--cache-dir", str(tmp_path),
               "--out", str(tmp_path / "out")])
    out = capsys.readouterr()
    result = json.loads((tmp_path / "out" / "rtsp_soak_2x.json").read_text())
    s = result["summary"]
    assert rc == 0, out.err
    assert (s["resumed_within"], s["gaps_recorded"], s["monotonic"], s["crashes"]) == (2, 2, True, 0)
    assert all(o["outage_s"] <= 5.0 and o["gap_before_s"] > 0 for o in result["outages"])
    assert {"machine", "versions", "command"} <= result.keys()
    assert "resumed 2 of 2 within 5 s" in out.out
