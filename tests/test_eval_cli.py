"""End to end on the tiny model: make-bench smoke, then eval over three policies, reports on disk."""

from __future__ import annotations

import json
import time

import pytest

from longwatch.app.cli import main


def _eval(bench, out, *extra):
    return main(["eval", "--bench", str(bench), "--policy", "full,sliding,rekv", "--model", "tiny", "--dtype",
                 "float32", "--device", "cpu", "--frame-size", "224", "--out", str(out), "--no-progress", "--json",
                 *extra])


def test_smoke_eval_on_tiny_model_writes_the_report(tmp_path, capsys):
    assert main(["make-bench", "--preset", "smoke", "--seed", "0", "--out", str(tmp_path / "nb"),
                 "--no-progress", "--json"]) == 0
    capsys.readouterr()
    assert _eval(tmp_path / "nb" / "annotations.json", tmp_path / "out", "--max-videos", "1",
                 "--max-new-tokens", "4", "--fps", "1") == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert sum("random weights" in ln for ln in captured.err.splitlines()) == 1  # tiny says what it is
    rows = {r["policy"]: r for r in out["summary"]}
    assert set(rows) == {"full", "sliding", "rekv"}
    n = rows["full"]["questions"]
    assert n >= 8 and all(r["questions"] == n for r in rows.values())
    assert rows["full"]["needle_recall"] == 1.0  # full context keeps every needle block
    assert rows["sliding"]["needle_recall"] < 1.0  # the window (8 patches) has lost early needles
    for name in ("json", "csv", "markdown", "plot_accuracy", "plot_ttft", "plot_memory"):
        assert (tmp_path / "out" / out["files"][name].split("/")[-1]).is_file()


def test_unknown_policy_and_budget_are_user_errors(tmp_path, capsys):
    assert main(["make-bench", "--preset", "smoke", "--out", str(tmp_path), "--no-progress"]) == 0
    capsys.readouterr()
    bench = tmp_path / "annotations.json"
    assert main(["eval", "--bench", str(bench), "--policy", "full,bogus", "--dry-run"]) == 2
    assert "unknown policy 'bogus'" in capsys.readouterr().err
    assert main(["eval", "--bench", str(bench), "--budget", "lots", "--dry-run"]) == 2
    assert "--budget" in capsys.readouterr().err


@pytest.mark.slow
def test_full_smoke_eval_fits_the_ci_budget(tmp_path, capsys):
    t0 = time.perf_counter()
    assert main(["make-bench", "--preset", "smoke", "--out", str(tmp_path / "nb"), "--no-progress"]) == 0
    assert _eval(tmp_path / "nb", tmp_path / "out", "--max-new-tokens", "16") == 0
    assert time.perf_counter() - t0 < 120
    assert "\n| rekv | config |" in (tmp_path / "out" / "summary.md").read_text()


def test_fidelity_flag_says_what_is_missing(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "longwatch.eval.fidelity", None)
    assert main(["make-bench", "--preset", "smoke", "--out", str(tmp_path), "--no-progress"]) == 0
    assert main(["eval", "--bench", str(tmp_path), "--policy", "full", "--fidelity", "--no-progress"]) == 2
    assert "eval/fidelity.py is not available" in capsys.readouterr().err
