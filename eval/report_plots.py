"""PNG plots of a run: accuracy and KL vs budget, accuracy vs peak memory, TTFT vs stream length, memory over time."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - backend first

TIERS = ("device", "host", "disk")
MIB = 2**20


def _vs_budget(rows: list[dict], key: str, ylabel: str, path: Path, default_budget: int | None) -> Path | None:
    series: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        budget = r["budget"] if r["budget"] is not None else default_budget
        if r.get(key) is not None and budget is not None:
            series[r["policy"]][budget / MIB].append(r[key])
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for policy, pts in series.items():
        xs = sorted(pts)
        ax.plot(xs, [sum(pts[x]) / len(pts[x]) for x in xs], marker="o", label=policy)
    ax.set_xscale("log")
    if key == "accuracy":
        ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("device budget (MiB)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _vs_memory(rows: list[dict], path: Path) -> Path | None:
    """Accuracy against what each run kept at its peak in all tiers together, one line per policy (its budgets)."""
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        peak = sum(r.get(f"peak_{t}_bytes") or 0 for t in TIERS)
        if r.get("accuracy") is not None and peak > 0:
            series[r["policy"]].append((peak / MIB, r["accuracy"]))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for policy, pts in series.items():
        pts.sort()
        ax.plot(*zip(*pts), marker="o", label=policy)
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("peak memory kept, device + host + disk (MiB)")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _ttft(records: list[dict], path: Path) -> Path | None:
    pts: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in records:
        if r.get("ttft_s") is not None:
            pts[r["policy"]].append((r["t_stream_s"], 1000 * r["ttft_s"]))
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for policy, xy in pts.items():
        ax.scatter(*zip(*xy), s=12, alpha=0.7, label=policy)
    ax.set_xlabel("stream length when asked (s)")
    ax.set_ylabel("time to first token (ms)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _memory(timeline: list[dict], path: Path) -> Path | None:
    """Bytes per tier over stream time, first video of the run, one line per policy (and budget)."""
    if not timeline:
        return None
    first = (timeline[0]["bench"], timeline[0]["video_id"])
    lines: dict[str, list[dict]] = defaultdict(list)
    for p in timeline:
        if (p["bench"], p["video_id"]) == first:
            lines[p["policy"] + ("" if p["budget"] is None else f"@{p['budget'] // MIB}MiB")].append(p)
    tiers = [t for t in TIERS if any(p.get(t) for pts in lines.values() for p in pts)] or ["device"]
    fig, axes = plt.subplots(1, len(tiers), figsize=(5 * len(tiers), 3.8), squeeze=False)
    for ax, tier in zip(axes[0], tiers):
        for label, pts in lines.items():
            ax.plot([p["t"] for p in pts], [p.get(tier, 0) / MIB for p in pts], label=label)
        ax.set_title(f"{tier} tier")
        ax.set_xlabel("stream time (s)")
        ax.set_ylabel("MiB")
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.suptitle(f"memory over time: {first[1]}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(rows: list[dict[str, Any]], records: list[dict], timeline: list[dict], out: Path,
                default_budget: int | None = None) -> dict[str, Path]:
    """Write the PNGs that have data; returns {name: path}."""
    out = Path(out)
    made = {
        "plot_accuracy": _vs_budget(rows, "accuracy", "accuracy", out / "accuracy_vs_budget.png", default_budget),
        "plot_kl": _vs_budget(rows, "kl", "KL to full context", out / "kl_vs_budget.png", default_budget),
        "plot_memory_accuracy": _vs_memory(rows, out / "accuracy_vs_memory.png"),
        "plot_ttft": _ttft(records, out / "ttft_vs_stream.png"),
        "plot_memory": _memory(timeline, out / "memory_over_time.png"),
    }
    return {k: v for k, v in made.items() if v is not None}
