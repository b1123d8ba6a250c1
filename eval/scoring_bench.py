"""Benchmark-level aggregates over per-question records, with each benchmark's own averaging rules.

OVO-Bench: accuracy per task, then the mean of task accuracies per track (backward, realtime, forward)
and overall. StreamingBench: accuracy per task and over all questions; proactive: time and answer
accuracy. VNBench: circular evaluation (a question counts only when every shuffled try is right), mean
over task types. ReKV grounding: retrieval recall / precision / F1 of the evidence the answer used.
NeedleStream: accuracy, exact match, temporal IoU with R@0.3/0.5/0.7, onset error, counting MRA, ordering.
"""

from __future__ import annotations

from collections import defaultdict
from statistics import mean
from typing import Any, Iterable

from longwatch.eval.formats.ovobench import TRACKS


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return mean(vals) if vals else None


def _scored(records: list[dict]) -> list[dict]:
    return [r for r in records if r.get("score") is not None]


def per_task(records: list[dict]) -> dict[str, dict[str, Any]]:
    """{task: {accuracy, n}} over scored records, tasks sorted."""
    groups: dict[str, list[float]] = defaultdict(list)
    for r in _scored(records):
        groups[r["task"]].append(float(r["score"]))
    return {t: {"accuracy": mean(v), "n": len(v)} for t, v in sorted(groups.items())}


def ovobench(records: list[dict]) -> dict[str, Any]:
    tasks = per_task(records)
    tracks = {track: _mean(tasks[t]["accuracy"] for t in names if t in tasks) for track, names in TRACKS.items()}
    return {"tasks": tasks, "tracks": {k: v for k, v in tracks.items() if v is not None},
            "accuracy": _mean(v["accuracy"] for v in tasks.values())}


def streamingbench(records: list[dict]) -> dict[str, Any]:
    pro = [r for r in records if r.get("kind") == "proactive"]
    rest = [r for r in records if r.get("kind") != "proactive"]
    out: dict[str, Any] = {"tasks": per_task(rest), "accuracy": _mean(r["score"] for r in _scored(rest))}
    if pro:
        out["proactive"] = {"time_accuracy": _mean(r["metrics"].get("time_correct") for r in pro),
                            "answer_accuracy": _mean(r["metrics"].get("answer_correct") for r in pro),
                            "n": len(pro)}
        if out["accuracy"] is None:
            out["accuracy"] = out["proactive"]["answer_accuracy"]
    return out


def vnbench(records: list[dict]) -> dict[str, Any]:
    groups: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for r in _scored(records):
        groups[r["task"]][r["extra"].get("circular_group", r["qid"])].append(bool(r["correct"]))
    tasks = {t: {"accuracy": mean(all(v) for v in g.values()), "n": len(g)} for t, g in sorted(groups.items())}
    return {"tasks": tasks, "accuracy": _mean(v["accuracy"] for v in tasks.values()),
            "per_try_accuracy": _mean(r["score"] for r in _scored(records))}


def needlestream(records: list[dict]) -> dict[str, Any]:
    def m(kind: str, key: str) -> float | None:
        return _mean(r["metrics"].get(key) for r in records if r.get("kind") == kind)

    return {
        "tasks": per_task(records),
        "accuracy": _mean(r["score"] for r in _scored(records) if r["kind"] == "mc"),
        "exact_match": _mean(r["metrics"].get("exact_match") for r in records if r["kind"] == "open"),
        "tiou": m("span", "tiou"), "r@0.3": m("span", "r@0.3"), "r@0.5": m("span", "r@0.5"),
        "r@0.7": m("span", "r@0.7"), "onset_error_s": m("span", "onset_error_s"),
        "count_mra": m("count", "mra"), "count_exact": _mean(r["score"] for r in records if r["kind"] == "count"),
        "ordering": m("order", "pairwise"), "ordering_exact": m("order", "exact_order"),
        "overall": _mean(r["score"] for r in _scored(records)),
    }


def generic(records: list[dict]) -> dict[str, Any]:
    scored = _scored(records)
    out: dict[str, Any] = {"tasks": per_task(records), "accuracy": _mean(r["score"] for r in scored)}
    opens = [r for r in records if r.get("kind") == "open" and "exact_match" in (r.get("metrics") or {})]
    if opens:
        out["exact_match"] = _mean(r["metrics"]["exact_match"] for r in opens)
        if any("judge" in r["metrics"] for r in opens):
            out["judge"] = _mean(r["metrics"].get("judge") for r in opens)
    return out


def retrieval(records: list[dict]) -> dict[str, float | None]:
    """Means of the per-question retrieval measures (questions without evidence windows are left out)."""
    rr = [r["retrieval"] for r in records if r.get("retrieval")]
    return {"recall": _mean(x["recall"] for x in rr), "precision": _mean(x["precision"] for x in rr),
            "f1": _mean(x["f1"] for x in rr), "needle_recall": _mean(r.get("needle_recall") for r in records),
            "n": len(rr)}


AGGREGATORS = {"ovobench": ovobench, "streamingbench": streamingbench, "vnbench": vnbench,
               "needlestream": needlestream}


def aggregate(records: list[dict], fmt: str) -> dict[str, Any]:
    """The benchmark's own summary of `records` (all from one benchmark file, one policy and budget)."""
    out = AGGREGATORS.get(fmt, generic)(records)
    out["retrieval"] = retrieval(records)
    out["questions"] = len(records)
    out["scored"] = len(_scored(records))
    return out
