"""`longwatch ingest`: JSON lines per patch and per state change, clean one-line errors."""

from __future__ import annotations

import json

import pytest

from longwatch.app.cli import main
from tests.ingest_fixtures import free_port, make_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("cli") / "clip.mp4", seconds=4.0, fps=10, size=(240, 320))


def lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_json_lines_for_patches_and_states(clip, capsys):
    assert main(["ingest", str(clip), "--json", "--fps", "2", "--frame-size", "224"]) == 0
    out = lines(capsys)
    states = [r["state"] for r in out if r["type"] == "state"]
    patches = [r for r in out if r["type"] == "patch"]
    assert states == ["connecting", "streaming", "ended"]
    assert [p["index"] for p in patches] == [0, 1, 2, 3]
    assert {"index", "t_start", "t_end", "height", "width"} <= set(patches[0])
    assert (patches[0]["height"], patches[0]["width"]) == (192, 256)  # 240x320 in a 224x224 budget, /32
    assert patches[1]["t_start"] == 1.0 and patches[1]["t_end"] == 2.0
    assert out[-1]["type"] == "stats" and out[-1]["patches"] == 4


def test_seconds_stops_early(clip, capsys):
    assert main(["ingest", str(clip), "--json", "--seconds", "2", "--frame-size", "64x64"]) == 0
    patches = [r for r in lines(capsys) if r["type"] == "patch"]
    assert len(patches) == 2 and patches[-1]["t_end"] == 2.0 and patches[0]["height"] == 64


def test_text_output(clip, capsys):
    assert main(["ingest", str(clip), "--seconds", "1"]) == 0
    text = capsys.readouterr().out
    assert "state streaming" in text and "patch 0" in text


def test_bad_file_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "x.mp4").write_text("not a video")
    assert main(["ingest", str(tmp_path / "x.mp4")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a readable video file" in err and "Traceback" not in err


def test_unreachable_stream_prints_failed_state_and_hides_credentials(capsys):
    url = f"rtsp://admin:hunter2@127.0.0.1:{free_port()}/live"
    assert main(["ingest", url, "--json"]) == 2
    captured = capsys.readouterr()
    out = [json.loads(line) for line in captured.out.splitlines()]
    assert out[-1]["state"] == "failed" and out[-1]["extra"]["code"] == "unreachable"
    assert "hunter2" not in captured.out + captured.err


def test_bad_flag_values_are_user_errors(clip, capsys):
    assert main(["ingest", str(clip), "--fps", "0"]) == 2
    assert main(["ingest", str(clip), "--seconds", "-1"]) == 2
    assert main(["ingest", "gopher://host/x"]) == 2
    err = capsys.readouterr().err
    assert "fps" in err and "seconds" in err and "gopher" in err
