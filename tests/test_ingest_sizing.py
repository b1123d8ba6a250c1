"""Qwen3-VL's video knobs (min_pixels, max_pixels, total_pixels): the sizes qwen-vl-utils itself gives.

tests/golden/sizing_qwen_vl_utils.json holds sizes produced once by qwen-vl-utils' own smart_resize and
fetch_video in a side venv (eval/golden_sizing.py, its command and versions inside); nothing here re-derives them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from longwatch.eval.config import load_config
from longwatch.ingest import IngestConfig, open_stream
from longwatch.ingest.patches import (TimestampSampler, choose_frame_size, pixel_budget, sampled_frames, smart_size,
                                      snap_frame_size)
from tests.ingest_fixtures import make_video

GOLDEN = json.loads((Path(__file__).parent / "golden" / "sizing_qwen_vl_utils.json").read_text())
IMAGES = [c for c in GOLDEN["cases"] if c["kind"] == "image"]
VIDEOS = [c for c in GOLDEN["cases"] if c["kind"] == "video"]
# qwen-vl-utils applies a default total (90% of MODEL_SEQ_LEN tokens) when none is given; longwatch applies none
QWEN_DEFAULT_TOTAL = int(GOLDEN["constants"]["MODEL_SEQ_LEN"] * 32 * 32 * 0.9)


def name(case: dict) -> str:
    knobs = ",".join(f"{k}={case[k]}" for k in ("fps", "min_pixels", "max_pixels", "total_pixels") if case.get(k))
    return f"{case['height']}x{case['width']}" + (f"@{case['total_frames']}f:{knobs}" if case["kind"] == "video"
                                                   else f":{knobs}")


def test_golden_file_is_qwen_vl_utils_own_output():
    assert GOLDEN["versions"]["qwen-vl-utils"] and "golden_sizing.py" in GOLDEN["command"]
    assert len(IMAGES) >= 15 and len(VIDEOS) >= 15
    assert GOLDEN["constants"]["VIDEO_MIN_TOKEN_NUM"] == 128 and GOLDEN["constants"]["VIDEO_MAX_TOKEN_NUM"] == 768


@pytest.mark.parametrize("case", IMAGES, ids=name)
def test_smart_size_rounds_as_qwen_vl_utils_smart_resize(case):
    got = smart_size(case["height"], case["width"], case["min_pixels"], case["max_pixels"])
    assert list(got) == case["resized"]


@pytest.mark.parametrize("case", VIDEOS, ids=name)
def test_pixel_knobs_size_a_file_as_qwen_vl_utils_fetch_video(case):
    """Same knobs, same frame count (qwen-vl-utils' own, from the golden file): same per-frame size."""
    total = case["total_pixels"]
    if total is None and QWEN_DEFAULT_TOTAL / case["nframes"] * 2 < 768 * 1024:
        total = QWEN_DEFAULT_TOTAL  # its default total binds (long clips): longwatch gets it only when asked
    top = case["max_pixels"]
    if total is None and top is None and case["min_pixels"] is None:
        top = 768 * 1024  # no knob at all is frame_size's "448": qwen-vl-utils' defaults take one knob, its default
    cfg = IngestConfig(fps=case["fps"], min_pixels=case["min_pixels"], max_pixels=top, total_pixels=total)
    assert list(choose_frame_size(case["height"], case["width"], cfg, frames=case["nframes"])) == case["resized"]


def test_without_total_pixels_a_long_file_keeps_its_frame_size():
    """The one designed difference: no default total, so 10 min of 1080p is not shrunk (qwen-vl-utils: 384x736)."""
    long = next(c for c in VIDEOS if c["total_frames"] == 15000 and c["total_pixels"] is None)
    assert long["resized"] == [384, 736]
    got = choose_frame_size(1080, 1920, IngestConfig(max_pixels=786432), frames=long["nframes"])
    assert got == (640, 1152)


def test_the_budget_rules_qwen_vl_utils_publishes():
    assert pixel_budget(None, None, None, None) == (128 * 1024, 768 * 1024)
    assert pixel_budget(None, 10**7, None, None)[1] == 768 * 1024  # max_pixels is capped at 768 tokens
    assert pixel_budget(None, None, 4_000_000, 20) == (131072, 400_000)  # total per temporal patch
    assert pixel_budget(None, None, 10**6, 20)[1] == int(131072 * 1.05)  # never below 1.05 x min_pixels
    with pytest.raises(ValueError, match="below min_pixels"):
        smart_size(720, 1280, 200704, 100352)


def test_frame_size_alone_is_unchanged_and_knobs_override_it(caplog):
    assert choose_frame_size(720, 1280, IngestConfig(frame_size="448")) == (320, 608)  # nearest multiples
    assert choose_frame_size(720, 1280, IngestConfig(frame_size="448")) == snap_frame_size(720, 1280, "448")
    with caplog.at_level(logging.INFO, logger="longwatch.ingest.patches"):
        got = choose_frame_size(720, 1280, IngestConfig(frame_size="448", max_pixels=448 * 448))
    assert got == (320, 576)  # smart_resize rounds down when over the budget
    assert "frame_size 448 ignored" in caplog.text


def test_a_live_stream_ignores_total_pixels_and_says_so(caplog):
    cfg = IngestConfig(total_pixels=1_000_000, max_pixels=200704)
    with caplog.at_level(logging.WARNING, logger="longwatch.ingest.patches"):
        assert choose_frame_size(720, 1280, cfg, frames=None) == (320, 576)
    assert "does not apply to a live stream" in caplog.text


@pytest.mark.parametrize("duration,rate,fps", [(4.0, 30, 2.0), (4.1, 30, 2.0), (4.02, 30, 2.0), (10.0, 25, 1.0),
                                               (7.3, 24, 2.0), (60.0, 30, 0.5), (3.0, 29.97, 2.0)])
def test_sampled_frames_counts_what_the_sampler_keeps(duration, rate, fps):
    sampler = TimestampSampler(fps)
    kept = sum(sampler(i / rate) for i in range(int(round(duration * rate))))
    assert sampled_frames(duration, fps, rate) == kept + kept % 2  # an odd last frame is padded to a patch


def test_a_file_gets_total_pixels_over_its_own_frames(tmp_path):
    video = make_video(tmp_path / "c.mp4", seconds=4.0, fps=30, size=(240, 320))  # 8 frames at 2 fps
    cfg = IngestConfig(fps=2.0, min_pixels=4096, total_pixels=8 * 4096 * 2)  # 8 frames -> 16384 per frame
    with open_stream(str(video), cfg) as stream:
        shapes = {p.frames.shape[1:3] for p in stream}
    assert shapes == {smart_size(240, 320, 4096, 16384)} == {(96, 128)}


@pytest.mark.parametrize("override,needle", [
    ({"ingest.max_pixels": 100352}, "max_pixels: 100352 is below the default min_pixels"),
    ({"ingest.min_pixels": 262144, "ingest.max_pixels": 200704}, "is below min_pixels"),
    ({"ingest.total_pixels": 10}, "total_pixels: must be a whole number"),
])
def test_bad_knobs_name_the_key(override, needle):
    from longwatch.memory.schema import ConfigError

    with pytest.raises(ConfigError, match=needle):
        load_config(overrides=override)


def test_flags_reach_the_config():
    import argparse

    from longwatch.eval.flags import add_config_flags, config_from_args

    p = argparse.ArgumentParser()
    add_config_flags(p, model=False, memory=False)
    cfg = config_from_args(p.parse_args(["--min-pixels", "65536", "--max-pixels", "200704", "--total-pixels",
                                         "9000000"]))
    assert (cfg.ingest.min_pixels, cfg.ingest.max_pixels, cfg.ingest.total_pixels) == (65536, 200704, 9_000_000)
    assert np.prod(choose_frame_size(720, 1280, cfg.ingest)) <= 200704
