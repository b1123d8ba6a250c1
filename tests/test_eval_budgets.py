"""Budget sweep points that set any tier: `--budget` parsing, runs that apply them, reports and plots that show
their labels, and runs from before points had tiers that still render."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import matplotlib.figure
import pytest
from longwatch.app.cli import main
from longwatch.app.config import load_config
from longwatch.eval.budgets import Budget, compact_bytes, parse_budgets
from longwatch.eval.formats import load_bench
from longwatch.eval.report import markdown, summarize, write_report
from longwatch.eval.report_plots import write_plots
from longwatch.eval.runner import Runner, RunOptions, budget_preflight
from longwatch.memory.retrieval import FaissIndex
from longwatch.memory.schema import ConfigError

from tests.test_eval_runner import SIZE, make_runner, real_runner, write_bench

OLD_RUN = Path(__file__).resolve().parents[1] / "eval" / "results" / "needlestream_smoke_budgets"


def test_plain_sizes_stay_device_budgets_with_their_old_numbers():
    points = parse_budgets("2.5MiB, 4MiB,64MB")
    assert points == [Budget(device=2621440), Budget(device=4 * 2**20), Budget(device=64 * 10**6)]
    assert [p.label for p in points] == ["2.5MiB", "4MiB", "64MB"]
    assert [p.cell() for p in points] == ["2.5 MiB", "4.0 MiB", "61.0 MiB"]  # summary.md's budget column as before
    assert parse_budgets(None) == parse_budgets("") == [Budget()] and Budget().label == "config"
    assert Budget.of(2**24) == Budget(device=2**24) and Budget.of(None) == Budget()


def test_tier_points_set_only_their_tiers_and_labels_read_back():
    points = parse_budgets("host=512KiB,device=1MiB+host=1MiB,disk=1MB, host = 2GiB+disk=0")
    assert points == [Budget(host=2**19), Budget(device=2**20, host=2**20), Budget(disk=10**6),
                      Budget(host=2 * 2**30, disk=0)]
    assert [p.label for p in points] == ["host=512KiB", "device=1MiB+host=1MiB", "disk=1MB", "host=2GiB+disk=0B"]
    assert all(Budget.from_label(p.label) == p for p in points)
    assert parse_budgets("device=3MiB") == [Budget(device=3 * 2**20)]  # a device-only point is a plain size
    assert Budget(device=3 * 2**20).label == "3MiB"
    mem = load_config().memory
    applied = Budget(host=2**19).apply(mem, policy="rekv")
    assert (applied.policy, applied.host_budget, applied.device_budget, applied.disk_budget) == (
        "rekv", 2**19, mem.device_budget, mem.disk_budget)
    assert [compact_bytes(n) for n in (0, 1000, 1536, 1001, 2 * 10**6)] == ["0B", "1KB", "1.5KiB", "1001B", "2MB"]


@pytest.mark.parametrize("spec, message", [
    ("gpu=1MiB", "item 'gpu=1MiB': unknown tier 'gpu' (choose from device, host, disk)"),
    ("4MiB,host=lots", "item 'host=lots': not a byte size: 'lots'"),
    ("lots", "item 'lots': not a byte size"),
    ("host=1MiB+", "item 'host=1MiB+': '' is not tier=size"),
    ("1MiB+host=2MiB", "item '1MiB+host=2MiB': '1MiB' is not tier=size"),
    ("host=1MiB+host=2MiB", "item 'host=1MiB+host=2MiB': sets host twice"),
    ("2MiB,,4MiB", "item 2 of '2MiB,,4MiB' is empty"),
    ("4MiB,device=4MiB", "item 'device=4MiB': the same point as '4MiB'"),
])
def test_bad_budget_items_are_one_error_naming_the_item(spec, message, tmp_path, capsys):
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        parse_budgets(spec)
    bench = write_bench(tmp_path, [{"video_id": "v", "video_path": "v.mp4", "conversations": [
        {"question": "q", "answer": "x"}]}])
    assert main(["eval", "--bench", str(bench), "--budget", spec, "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"longwatch: error: --budget: {message}")


def test_preflight_checks_the_tier_a_point_sets(tmp_path):
    from tests.ingest_fixtures import make_video
    from tests.memory_fakes import fake_backbone

    cfg = load_config()
    (tmp_path / "v.mp4").unlink(missing_ok=True)
    path = write_bench(tmp_path, [{"video_id": "v", "video_path": "v.mp4", "conversations": [
        {"question": "q", "answer": "x"}]}])
    make_video(tmp_path / "v.mp4")
    asks: list = []
    runner = make_runner({"v.mp4": 4}, lambda q, s: "x", asks)
    runner.preflight = budget_preflight(fake_backbone(), cfg)
    bench = [load_bench(path)]
    with pytest.raises(ConfigError, match="memory.host_budget: "):  # rekv's offloaded blocks: one must fit
        runner.run(bench, tmp_path, RunOptions(["rekv"], budgets=[Budget(host=2**30), Budget(host=1000)],
                                                progress=False))
    with pytest.raises(ConfigError, match="memory.device_budget: 1000 B cannot hold"):
        runner.run(bench, tmp_path, RunOptions(["rekv"], budgets=[Budget(device=1000, host=2**30)], progress=False))
    with pytest.raises(ConfigError, match=r"^videorag at budget disk=0B: memory.disk_budget: videorag keeps"):
        runner.run(bench, tmp_path, RunOptions(["videorag"], budgets=[Budget(disk=0)], progress=False))
    with pytest.raises(ConfigError, match=r"^streamchat at budget host=1KiB: memory.host_budget: streamchat keeps"):
        runner.run(bench, tmp_path, RunOptions(["streamchat"], budgets=[Budget(host=1024)], progress=False))
    assert asks == []  # every failure before any video streamed


def _texts(monkeypatch) -> dict[str, list[str]]:
    """Every PNG written from now on: {file name: its annotations' lines, legend entries and x label}."""
    seen: dict[str, list[str]] = {}
    save = matplotlib.figure.Figure.savefig

    def spy(fig, path, *a, **k):
        texts = [line for ax in fig.axes for t in ax.texts for line in t.get_text().split("\n")]
        texts += [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
        texts += [ax.get_xlabel() for ax in fig.axes]
        seen[Path(path).name] = texts
        return save(fig, path, *a, **k)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    return seen


def test_host_points_show_the_host_peak_they_allowed(tmp_path, tiny, monkeypatch):
    conv = [{"question": "Q9", "choices": ["red circle", "blue square"], "answer": "red circle", "ask_time": 9},
            {"question": "Q-end", "choices": ["red circle", "blue square"], "answer": "red circle"}]
    path = write_bench(tmp_path, [{"video_id": "v", "video_path": "v.mp4", "conversations": conv}])
    streams: list = []
    points = parse_budgets("host=120KB,device=16MiB+host=300KB")
    result = real_runner(tiny, 10, lambda q, s: "A", streams).run(
        [load_bench(path)], None, RunOptions(["rekv"], budgets=points, progress=False))
    default = load_config().memory
    assert [(s.stream.cfg.device_budget, s.stream.cfg.host_budget) for s in streams] == [
        (default.device_budget, 120_000), (2**24, 300_000)]
    # sink 1 + window 2 of 10 patches: rekv offloads blocks 1-7 to host RAM, each block's K/V plus its entry in
    # the retrieval index when that is faiss in host RAM; 300 KB holds all 7, 120 KB (4 blocks' worth, less what
    # the index holds back) fewer, the oldest dropped
    d = tiny.dims
    entry = d.num_layers * (d.kv_heads * d.head_dim * 4 + FaissIndex.ENTRY_OVERHEAD) \
        if importlib.util.find_spec("faiss") else 0
    block = tiny.tokens_per_patch(SIZE, 0.25) * d.bytes_per_token + entry
    seen = _texts(monkeypatch)
    files = write_report(result, tmp_path / "out", {"model": "tiny", "default_budget": default.device_budget,
                                                    "default_budgets": {"device": default.device_budget,
                                                                        "host": default.host_budget, "disk": 0}})
    run = json.loads(files["json"].read_text())
    rows = {r["budget_label"]: r for r in run["summary"]}
    small, large = rows["host=120KB"], rows["device=16MiB+host=300KB"]
    assert (small["budget"], large["budget"]) == (None, 2**24)
    assert large["peak_host_bytes"] == 7 * block < 300_000
    assert small["peak_host_bytes"] % block == 0 and 2 * block <= small["peak_host_bytes"] <= min(4 * block, 120_000)
    assert {(r["budget"], r["budget_label"]) for r in run["records"]} == {(None, "host=120KB"),
                                                                          (2**24, "device=16MiB+host=300KB")}
    memory_csv = files["memory"].read_text().splitlines()
    assert memory_csv[0].startswith("policy,budget,budget_label,") and len(memory_csv) == 1 + 2 * 10
    assert sum(",host=120KB," in ln for ln in memory_csv) == 10
    md = files["markdown"].read_text()
    assert "| rekv | host=120KB | 2 |" in md and "| rekv | device=16MiB+host=300KB | 2 |" in md
    assert "| task | rekv @ host=120KB | rekv @ device=16MiB+host=300KB |" in md
    # the device-budget plot has no device-only point to show; the host one has the host-only point
    assert "plot_accuracy" not in files and files["plot_accuracy_host"].name == "accuracy_vs_host_budget.png"
    assert "host budget (MiB)" in seen["accuracy_vs_host_budget.png"]
    assert {"host=120KB", "device=16MiB+host=300KB"} <= set(seen["accuracy_vs_memory.png"])
    assert {"rekv@host=120KB", "rekv@device=16MiB+host=300KB"} <= set(seen["memory_over_time.png"])


def test_a_run_from_before_tier_points_renders_as_it_did(tmp_path, monkeypatch):
    """eval/results/needlestream_smoke_budgets: `--budget 2MB,2.5MB,3MB,4MB,8MB`, written before budget_label."""
    run = json.loads((OLD_RUN / "run.json").read_text())
    assert "budget_label" not in run["summary"][0] and "budget_label" not in run["records"][0]
    table = lambda md: [ln for ln in md.splitlines() if ln.startswith("| ")][:16]  # noqa: E731 - the main table
    assert table(markdown(run["summary"])) == table((OLD_RUN / "summary.md").read_text())
    rows = summarize(run["records"], [])
    assert [(r["policy"], r["budget"], r["budget_label"]) for r in rows][:2] == [
        ("sliding", 2 * 10**6, "2MB"), ("sliding", 2_500_000, "2.5MB")]
    assert [(r["budget"], r["accuracy"], r["needle_recall"]) for r in rows] == [
        (r["budget"], r["accuracy"], r["needle_recall"]) for r in run["summary"]]
    seen = _texts(monkeypatch)
    files = write_plots(run["summary"], run["records"], [], tmp_path, run["meta"]["default_budget"])
    assert set(files) == {"plot_accuracy", "plot_kl", "plot_memory_accuracy", "plot_ttft"}
    assert "device budget (MiB)" in seen["kl_vs_budget.png"] and "2.5MB" in seen["accuracy_vs_memory.png"]
