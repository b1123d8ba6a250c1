"""Run reports: run.json (config, summaries, every question), questions.csv, memory.csv, summary.md, plots."""

from __future__ import annotations

import csv
import gzip
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from longwatch.eval.budgets import CONFIG, row_budget
from longwatch.eval.scoring_bench import aggregate

TIERS = ("device", "host", "disk")


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def interval95(p: float | None, n: int) -> tuple[float, float] | None:
    """Wilson 95% interval of a proportion `p` over `n` questions (for fractional scores, such as counting's,
    an approximation of the same width)."""
    if p is None or n <= 0:
        return None
    z = 1.96
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * float(np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _task_cell(task: dict[str, Any] | None) -> str:
    if not task or task.get("accuracy") is None:
        return "-"
    ci = interval95(task["accuracy"], int(task.get("n", 0)))
    return f"{task['accuracy']:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}] n={task['n']}" if ci else "")


def headline(agg: dict[str, Any]) -> float | None:
    """The one accuracy number of a benchmark summary (NeedleStream: mean score over all question kinds)."""
    return agg.get("overall", agg.get("accuracy"))


def summarize(records: list[dict], timeline: list[dict]) -> list[dict[str, Any]]:
    """One row per (bench, policy, budget point): the benchmark's aggregate plus latency, memory and fidelity.

    Rows carry `budget` (the device bytes the point set, None: the config's) and `budget_label` (the point,
    eval/budgets.py); records from before points had labels are grouped by their device budget alone.
    """
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["bench"], r["format"], r["policy"], row_budget(r))].append(r)
    peaks: dict[tuple, dict[str, int]] = defaultdict(lambda: dict.fromkeys(TIERS, 0))
    for p in timeline:
        key = (p["bench"], p["policy"], row_budget(p))
        for t in TIERS:
            peaks[key][t] = max(peaks[key][t], int(p.get(t, 0)))
    rows = []
    for (bench, fmt, policy, point), recs in groups.items():
        agg = aggregate(recs, fmt)
        ttft = [r["ttft_s"] for r in recs if r.get("ttft_s") is not None]
        fid = [r["fidelity"] for r in recs if r.get("fidelity")]
        peak = dict(peaks[(bench, policy, point)])
        for r in recs:
            for t, v in (r.get("peak") or {}).items():
                peak[t] = max(peak.get(t, 0), int(v))
        rows.append({
            "bench": bench, "format": fmt, "policy": policy, "budget": point.device, "budget_label": point.label,
            "questions": len(recs),
            "accuracy": headline(agg), "retrieval_recall": agg["retrieval"]["recall"],
            "needle_recall": agg["retrieval"]["needle_recall"],
            **{k: _mean([f[k] for f in fid if f.get(k) is not None]) for k in ("kl", "top1", "attn_recall")},
            "ttft_p50_s": _pct(ttft, 50), "ttft_p95_s": _pct(ttft, 95),
            "decode_mean_s": _mean([r["decode_s"] for r in recs if r.get("decode_s") is not None]),
            **{f"peak_{t}_bytes": peak.get(t, 0) for t in TIERS},
            "detail": agg,
        })
    return rows


def _fmt(v: Any, kind: str = "") -> str:
    if v is None:
        return "-"
    if kind == "bytes":
        from longwatch.memory.schema import format_bytes

        return format_bytes(v)
    if kind == "ms":
        return f"{1000 * v:.0f}"
    if kind == "sci":  # KL spans 1e-8 (full) to 1e-1: fixed decimals would print 0.000
        return f"{v:.2e}"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


COLUMNS = [("policy", "policy", ""), ("budget", "budget", "bytes"), ("questions", "questions", ""),
           ("accuracy", "accuracy", ""), ("retrieval_recall", "retrieval recall", ""),
           ("needle_recall", "needle recall", ""), ("kl", "KL", "sci"),
           ("attn_recall", "attn recall", ""), ("ttft_p50_s", "TTFT p50 (ms)", "ms"),
           ("ttft_p95_s", "TTFT p95 (ms)", "ms"), ("peak_device_bytes", "peak device", "bytes"),
           ("peak_host_bytes", "peak host", "bytes"), ("peak_disk_bytes", "peak disk", "bytes")]


def _run_name(row: dict[str, Any]) -> str:
    """ "rekv", "rekv @ 16.0 MiB", "rekv @ host=512KiB": the policy, and the budget point when it set one."""
    point = row_budget(row)
    return row["policy"] + ("" if point.label == CONFIG else f" @ {point.cell()}")


def markdown(rows: list[dict[str, Any]]) -> str:
    """Per benchmark: the policy x metric table, then accuracy per task and policy."""
    out = []
    for bench in dict.fromkeys(r["bench"] for r in rows):
        brows = [r for r in rows if r["bench"] == bench]
        out += [f"### {bench} ({brows[0]['format']})", "",
                "| " + " | ".join(c[1] for c in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        out += ["| " + " | ".join(row_budget(r).cell() if k == "budget" else _fmt(r[k], kind)
                                  for k, _, kind in COLUMNS) + " |" for r in brows]
        tasks = sorted({t for r in brows for t in r["detail"].get("tasks", {})})
        if tasks:
            labels = [_run_name(r) for r in brows]
            out += ["", "Accuracy per task, with its 95% interval (Wilson) and the number of questions:", "",
                    "| task | " + " | ".join(labels) + " |", "|" + "---|" * (len(brows) + 1)]
            for t in tasks:
                cells = [_task_cell(r["detail"]["tasks"].get(t)) for r in brows]
                out.append(f"| {t} | " + " | ".join(cells) + " |")
        extras = {k: v for k, v in brows[0]["detail"].items() if k in ("tracks", "proactive")}
        if extras:
            out += ["", "Benchmark-specific: " + "; ".join(
                f"{_run_name(r)}: " + json.dumps({k: r["detail"].get(k) for k in extras}, default=_round) for r in brows)]
        out.append("")
    return "\n".join(out)


def _round(x: Any) -> Any:
    return round(x, 4) if isinstance(x, float) else str(x)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """One row per dict, the union of their keys as columns; gzipped when `path` ends in .gz."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with (gzip.open(path, "wt", newline="") if path.suffix == ".gz" else path.open("w", newline="")) as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in r.items()})


def write_report(result: Any, out: str | Path, meta: dict[str, Any], plots: bool = True,
                 compact: bool = False) -> dict[str, Path]:
    """Write every report file under `out`; returns {name: path}. `compact` (a report to commit): run.json
    without the per-answer records, which are all in questions.csv, and the two CSVs gzipped."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = summarize(result.records, result.timeline)
    gz = ".gz" if compact else ""
    files = {"json": out / "run.json", "csv": out / f"questions.csv{gz}", "memory": out / f"memory.csv{gz}",
             "summary_csv": out / "summary.csv", "markdown": out / "summary.md"}
    run = {"meta": meta, "benches": result.benches, "summary": rows}
    files["json"].write_text(json.dumps(run if compact else {**run, "records": result.records}, indent=1, default=str))
    write_csv(files["csv"], result.records)
    write_csv(files["memory"], result.timeline)
    write_csv(files["summary_csv"], [{k: v for k, v in r.items() if k != "detail"} for r in rows])
    mode = meta.get("choices", "generate")
    how = "" if mode == "generate" else (f"Multiple-choice answers picked from the choices' {mode}s by the model's "
                                         "probability of each (--choices), not generated.\n\n")
    files["markdown"].write_text(f"# longwatch eval: {meta.get('model', '')}\n\n{how}" + markdown(rows))
    if plots:
        from longwatch.eval.report_plots import write_plots

        defaults = meta.get("default_budgets") or {"device": meta.get("default_budget")}  # runs before tier points
        files.update(write_plots(rows, result.records, result.timeline, out, defaults.get("device"), defaults))
    return files
