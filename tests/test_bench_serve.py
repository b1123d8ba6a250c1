"""`longwatch bench serve`: the figures come from what was measured, and a tiny real run measures something."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from longwatch.eval.serve_load import LiveRun, LiveSettings, pct, summarise
from longwatch.eval.stateless import chunks


def test_percentiles_interpolate_and_tolerate_no_values():
    assert pct([], 50) is None
    assert pct([3.0], 95) == 3.0
    assert pct([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert pct(list(map(float, range(101))), 95) == pytest.approx(95.0)


def test_live_figures_are_computed_from_the_samples_and_answers():
    run = LiveRun(streams=["a", "b"], window=(100.0, 110.0))
    for t in range(11):  # a: 1 patch a second (2 frames/s), lag 0.5 s; b: half that, lag growing, then failed
        run.samples.append({"t": 100.0 + t, "stream": "a", "state": "streaming", "lag_s": 0.5, "patches": t,
                            "dropped_frames": 0})
        run.samples.append({"t": 100.0 + t, "stream": "b", "state": "failed" if t == 10 else "streaming",
                            "lag_s": float(t), "patches": t // 2, "dropped_frames": t})
    run.answers = [{"streamed": True, "ttft_s": 0.1 * k, "total_s": 1.0, "server_ttft_s": 0.05,
                    "completion_tokens": 4, "content": True} for k in range(1, 5)]
    run.answers.append({"streamed": False, "ttft_s": None, "total_s": 2.0, "server_ttft_s": 0.05,
                        "completion_tokens": 4, "content": True})
    run.error("http 429 server_busy", "x")
    s = summarise(run, LiveSettings(streams=2, clients=1, seconds=10, sample_s=0.5), fps=2.0)
    assert s["per_stream"]["a"]["frames_per_s"] == pytest.approx(2.0)
    assert s["frames_per_s"] == pytest.approx(3.0) and s["real_time_frames_per_s"] == 4.0 and not s["keeps_up"]
    assert s["per_stream"]["b"]["lag_s_max"] == 10.0 and s["lag_s_max"] == 10.0
    assert s["ttft_s_p50"] == pytest.approx(0.25) and s["answers"] == 5 and s["answers_streamed"] == 4
    assert s["errors_by_kind"] == {"http 429 server_busy": 1, "stream stopped": 1} and s["errors"] == 2
    assert s["dropped_frames"] == 10


def test_stateless_chunks_hold_whole_patches():
    items = [(i, [0] * n) for i, n in enumerate([56, 56, 56, 300, 10])]
    got = [[i for i, _ in c] for c in chunks(items, 120)]
    assert got == [[0, 1], [2], [3], [4]]  # never a patch split; an oversized one is a chunk of its own


def test_impossible_settings_are_refused(tmp_path):
    from longwatch.app.cli import main

    assert main(["bench", "serve", "--streams", "0", "--out", str(tmp_path / "o")]) == 2
    assert main(["bench", "serve", "--minutes", "1,x", "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_tiny_run_measures_live_load_and_both_sides(tmp_path):
    """About 30 s: the server subprocess loads the tiny model; 1 stream, 1 client, 3 s; 0.1 min compared."""
    r = subprocess.run([sys.executable, "-m", "longwatch", "bench", "serve", "--streams", "1", "--clients", "1",
                        "--seconds", "3", "--minutes", "0.1", "--threads", "1", "--cache-dir", str(tmp_path / "c"),
                        "--out", str(tmp_path), "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    live = out["live"]
    assert live["frames_per_s"] > 0 and live["answers"] >= 1 and live["errors"] == 0
    assert live["answers_streamed"] >= 1 and live["ttft_s_p50"] > 0 and live["lag_s_p50"] is not None
    (row,) = out["compare"]["rows"]
    assert row["minutes"] == 0.1 and row["stateful_ttft_s"] > 0 and row["stateless_ttft_s"] > 0
    assert row["stateless_tokens_prefilled"] > row["stateful_tokens_prefilled"] > 0
    assert row["stateless_complete"] and row["ttft_ratio"] == pytest.approx(
        row["stateless_ttft_s"] / row["stateful_ttft_s"])
    assert "EMULATION" in out["compare"]["stateless_label"]
    check = out["compare"]["emulation_check"]  # the emulation is the full policy's computation
    assert check["same_first_token"] and check["max_abs_logit_diff"] < 1e-4
    saved = json.loads((tmp_path / "serve_tiny_1x1.json").read_text())
    assert {"machine", "versions", "command", "load_avg_at_start"} <= set(saved) and "bench serve" in saved["command"]
    assert saved["live"]["samples"]["rows"] and saved["live"]["answers"]
    assert saved["compare"]["stateless"][0]["video_tokens_prefilled"] > 0
