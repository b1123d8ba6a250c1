"""bench memory and bench fidelity: they measure what they claim, save JSON with machine and command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _bench(*args: str) -> dict:
    r = subprocess.run([sys.executable, "-m", "app", "bench", *args, "--json"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_bench_memory_reports_tiers_within_budget(tmp_path):
    out = _bench("memory", "--model", "tiny", "--minutes", "1", "--policy", "rekv", "--frame-size", "96",
                 "--device-budget", "4MB", "--host-budget", "300KB", "--disk-budget", "600KB", "--window", "3",
                 "--retrieve", "2", "--out", str(tmp_path))
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
    out = _bench("fidelity", "--model", "tiny", "--minutes", "0.5", "--policy", "full,sliding,rekv",
                 "--frame-size", "96", "--window", "3", "--retrieve", "2", "--device-budget", "4MB",
                 "--answer-tokens", "4", "--out", str(tmp_path))
    s = out["summary"]
    assert s["full"]["kl"] < 1e-6 and s["full"]["top1"] == 1.0 and s["full"]["attn_recall"] == pytest.approx(1.0)
    assert s["sliding"]["attn_recall"] < s["rekv"]["attn_recall"] < 1.0
    assert s["sliding"]["context_tokens"] < s["rekv"]["context_tokens"] < s["full"]["context_tokens"]
