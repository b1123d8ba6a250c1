"""PNG plots of a run: accuracy and KL vs each tier's budget, accuracy vs peak memory, TTFT, memory over time."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - backend first

from longwatch.eval.budgets import CONFIG, row_budget  # noqa: E402

TIERS = ("device", "host", "disk")
MIB = 2**20


def _sets_only(row: dict, tier: str) -> bool:
    """The row's budget point sets `tier` and no other tier."""
    return set(row_budget(row).tiers()) == {f"{tier}_budget"}


def _vs_budget(rows: list[dict], key: str, ylabel: str, path: Path, default_budget: int | None,
               tier: str = "device") -> Path | None:
    """`key` against the `tier` budget, one line per policy, over the points that set that tier alone, and the
    point that sets none at `default_budget` (the config's); points that set several tiers: _vs_memory."""
    series: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        point = row_budget(r)
        if point.label != CONFIG and not _sets_only(r, tier):
            continue
        budget = getattr(point, tier) if point.label != CONFIG else default_budget
        if r.get(key) is not None and budget is not None:
            series[r["policy"]][budget / MIB].append(r[key])
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for policy, pts in series.items():
        xs = sorted(pts)
        ax.plot(xs, [sum(pts[x]) / len(pts[x]) for x in xs], marker="o", label=policy)
    positive = [x for pts in series.values() for x in pts if x > 0]
    if positive and len(positive) < sum(len(pts) for pts in series.values()):  # a tier at 0 (off): no log of it
        ax.set_xscale("symlog", linthresh=min(positive))
    else:
        ax.set_xscale("log")
    if key == "accuracy":
        ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"{tier} budget (MiB)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _vs_memory(rows: list[dict], path: Path) -> Path | None:
    """Accuracy against what each run kept at its peak in all tiers together, one line per policy through its
    budget points, each marked with its label (whichever tiers it set)."""
    series: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for r in rows:
        peak = sum(r.get(f"peak_{t}_bytes") or 0 for t in TIERS)
        if r.get("accuracy") is not None and peak > 0:
            series[r["policy"]].append((peak / MIB, r["accuracy"], row_budget(r).label))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for policy, pts in series.items():
        pts.sort(key=lambda p: p[0])  # stable: coinciding points keep the sweep's order
        (line,) = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=policy)
        at: dict[tuple[float, float], list[str]] = defaultdict(list)  # points that coincide share one note
        for x, y, label in pts:
            at[(x, y)].append(label)
        for xy, labels in at.items():
            ax.annotate("\n".join(labels), xy, textcoords="offset points", xytext=(3, 4), fontsize=6,
                        color=line.get_color())
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
            label = row_budget(p).label
            lines[p["policy"] + ("" if label == CONFIG else f"@{label}")].append(p)
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
                default_budget: int | None = None, defaults: dict[str, int | None] | None = None) -> dict[str, Path]:
    """Write the PNGs that have data; returns {name: path}. `default_budget`: the config's device budget;
    `defaults`: the config's budget per tier (host and disk plots place the point that sets none there)."""
    out = Path(out)
    made = {
        "plot_accuracy": _vs_budget(rows, "accuracy", "accuracy", out / "accuracy_vs_budget.png", default_budget),
        "plot_kl": _vs_budget(rows, "kl", "KL to full context", out / "kl_vs_budget.png", default_budget),
        "plot_memory_accuracy": _vs_memory(rows, out / "accuracy_vs_memory.png"),
        "plot_ttft": _ttft(records, out / "ttft_vs_stream.png"),
        "plot_memory": _memory(timeline, out / "memory_over_time.png"),
    }
    for tier in ("host", "disk"):  # only when the sweep set that tier alone somewhere
        if any(_sets_only(r, tier) for r in rows):
            default = (defaults or {}).get(tier)
            made[f"plot_accuracy_{tier}"] = _vs_budget(rows, "accuracy", "accuracy",
                                                       out / f"accuracy_vs_{tier}_budget.png", default, tier)
            made[f"plot_kl_{tier}"] = _vs_budget(rows, "kl", "KL to full context", out / f"kl_vs_{tier}_budget.png",
                                                 default, tier)
    return {k: v for k, v in made.items() if v is not None}
