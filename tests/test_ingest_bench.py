"""The decode benchmark runs every reader in its own process and records machine, versions and command."""

from __future__ import annotations

import argparse
import json

from longwatch.eval import bench_decode
from tests.ingest_fixtures import make_video


def test_bench_decode_writes_a_complete_report(tmp_path, capsys):
    video = make_video(tmp_path / "v.mp4", seconds=3.0, fps=30, size=(72, 128))
    parser = argparse.ArgumentParser()
    bench_decode.add_arguments(parser)
    out = tmp_path / "decode.json"
    args = parser.parse_args(["--video", str(video), "--repeats", "1", "--out", str(out)])
    assert bench_decode.main(args) == 0
    report = json.loads(out.read_text())
    assert report["command"] and report["machine"]["logical_cpus"] >= 1
    assert {"av", "opencv", "decord", "torchcodec", "python"} <= set(report["versions"])
    by_reader = {r["reader"]: r for r in report["results"]}
    assert set(by_reader) == {"decord", "pyav", "opencv", "torchcodec"}
    if report["versions"]["torchcodec"] is None:  # an optional extra: where it does not load, its run says so
        assert "torchcodec" in by_reader.pop("torchcodec")["error"]
    for r in by_reader.values():
        assert r["frames_kept"] == 6 and r["kept_frames_per_s"] > 0 and r["peak_rss_mib"] > 0
    # every reader decoded the same frames
    assert len({r["checksum"] for r in by_reader.values()}) == 1
    assert report["winner"] in by_reader and "winner" in capsys.readouterr().out
