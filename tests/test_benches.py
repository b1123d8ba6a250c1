"""bench memory and bench fidelity: they measure what they claim, save JSON with machine and command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _bench(*args: str, stderr: list | None = None) -> dict:
    r = subprocess.run([sys.executable, "-m", "longwatch", "bench", *args, "--json"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    if stderr is not None:
        stderr.append(r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_bench_memory_reports_tiers_within_budget(tmp_path):
    err: list[str] = []
    out = _bench("memory", "--model", "tiny", "--minutes", "1", "--policy", "rekv", "--frame-size", "96",
                 "--device-budget", "4MB", "--host-budget", "300KB", "--disk-budget", "600KB", "--window", "3",
                 "--retrieve", "2", "--out", str(tmp_path), "--progress", stderr=err)
    assert "memory: rekv 1 min" in err[0] and "60.0/60.0 s" in err[0]  # the bar, on stderr; stdout is JSON
    assert out["patches"] == 60 and out["over_budget"] == []
    for name in ("device", "host", "disk"):
        t = out["tiers"][name]
        assert t["peak"] <= t["budget"]
    assert out["tiers"]["host"]["blocks"] > 0 and out["tiers"]["disk"]["blocks"] > 0
    assert out["host_rss"]["start"] > 0 and out["host_rss"]["end"] > 0
    saved = json.loads((tmp_path / "memory_tiny_rekv_1min.json").read_text())
    assert {"machine", "versions", "command", "timeline"} <= set(saved)
    assert "bench memory" in saved["command"]


def test_bench_fidelity_full_is_exact_and_bounded_policies_lose_attention(tmp_path):
    err: list[str] = []
    out = _bench("fidelity", "--model", "tiny", "--minutes", "0.5", "--policy", "full,sliding,rekv",
                 "--frame-size", "96", "--window", "3", "--retrieve", "2", "--device-budget", "4MB",
                 "--answer-tokens", "4", "--out", str(tmp_path), "--progress", stderr=err)
    assert "fidelity 3/3: rekv 0.5 min" in err[0] and "33/33" in err[0]  # 30 patches, 3 questions
    s = out["summary"]
    assert s["full"]["kl"] < 1e-6 and s["full"]["top1"] == 1.0 and s["full"]["attn_recall"] == pytest.approx(1.0)
    assert s["sliding"]["attn_recall"] < s["rekv"]["attn_recall"] < 1.0
    assert s["sliding"]["context_tokens"] < s["rekv"]["context_tokens"] < s["full"]["context_tokens"]


def test_bench_speed_measures_every_curve_for_each_policy_and_stream_count(tmp_path):
    err: list[str] = []
    out = _bench("speed", "--model", "tiny", "--minutes", "0.25,0.5", "--policy", "full,rekv", "--streams", "1,2",
                 "--frame-size", "96", "--window", "3", "--device-budget", "4MB", "--answer-tokens", "4",
                 "--out", str(tmp_path), "--progress", stderr=err)
    assert "speed 4/4: rekv x2 to 0.5 min" in err[0] and "30.0/30.0 s" in err[0]
    assert set(out["summary"]) == {"fullx1", "rekvx1", "fullx2", "rekvx2"}
    saved = json.loads((tmp_path / "speed_tiny_cpu.json").read_text())
    assert {"machine", "versions", "command", "peak_flops"} <= set(saved) and "bench speed" in saved["command"]
    assert (tmp_path / "speed_tiny_cpu.png").stat().st_size > 10_000
    runs = {(r["policy"], r["streams"]): r for r in saved["runs"]}
    for (policy, n), r in runs.items():
        assert r["patches_per_stream"] == 30 and len(r["patch_costs_s"]) == 30 and r["stopped"] is None
        assert r["frames_per_s"] == pytest.approx(2 * r["patches_per_s"]) and 0 < r["mfu"] < 1
        assert [c["minutes"] for c in r["checkpoints"]] == [0.25, 0.5]
        for c in r["checkpoints"]:
            assert c["ttft_s"] > 0 and c["device_peak_bytes"] > 0 and c["host_rss_bytes"] > 0
    # full attends to everything it has seen; rekv to sinks, window and what it retrieves
    full_ctx = [c["context_tokens"] for c in runs[("full", 1)]["checkpoints"]]
    rekv_ctx = [c["context_tokens"] for c in runs[("rekv", 1)]["checkpoints"]]
    assert full_ctx[1] > full_ctx[0] and rekv_ctx[1] < full_ctx[1]


def test_bench_soak_stays_in_budget_and_in_range_across_rebases(tmp_path):
    """A 12-minute soak re-based every ~3 minutes: no tier over budget, every forward's distance under
    rebase_limit + answer, and after the re-bases the same answer as a fresh stream with the same sinks
    and window (a re-base that rotated the sinks, or misplaced the window, changes the logits)."""
    out = _bench("soak", "--hours", "0.2", "--policies", "rekv", "--question-every-s", "240", "--rebase-limit", "4096",
                 "--out", str(tmp_path))
    assert out["missed"] == []
    for r in out["runs"]:
        assert r["patches"] == 720 and r["violations"] == 0 and r["rebases"] >= 2
        assert r["max_distance"] <= 4096 + r["memory_config"]["answer_tokens"]
        fc = r["final_check"]
        assert fc["same_tokens"] and fc["max_logit_diff"] < 1e-4 and fc["context_tokens"] == fc["fresh_context_tokens"]
    rekv, = out["runs"]
    assert rekv["tiers"]["host"]["blocks"] > 0 and rekv["tiers"]["disk"]["blocks"] > 0 and rekv["evicted"] > 0
    saved = json.loads((tmp_path / "soak_tiny_0.2h.json").read_text())
    assert {"machine", "versions", "command"} <= set(saved) and "bench soak" in saved["command"]


def test_bench_soak_refuses_impossible_settings():
    r = subprocess.run([sys.executable, "-m", "longwatch", "bench", "soak", "--hours", "0", "--policies", "full"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "--hours: must be > 0" in r.stdout and "--policies: 'full' is not a bounded policy" in r.stdout


def test_result_files_are_named_by_the_models_last_part_never_a_path(tmp_path):
    """A hub id or a file path as --model used to make `bench memory`/`fidelity`/`soak`/`speed`/`offline` write into
    a subfolder that does not exist (memory_Qwen/Qwen3-VL-2B-Instruct_...json) and fail after the whole run."""
    from longwatch.eval.environment import model_tag, save_result

    assert model_tag("tiny") == "tiny"
    assert model_tag("Qwen/Qwen3-VL-2B-Instruct") == "Qwen3-VL-2B-Instruct"
    assert model_tag("runs/train/x/needle-tiny.safetensors") == "needle-tiny.safetensors"
    path = save_result(f"memory_{model_tag('Qwen/Qwen3-VL-2B-Instruct')}_rekv_1min", {}, tmp_path)
    assert path.parent == tmp_path and path.is_file()
