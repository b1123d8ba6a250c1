"""Did the answer look at the right moments? Retrieval recall/precision/F1 (ReKV) and needle-block recall.

ReKV measures, per question with temporal_windows, the seconds of ground truth covered by retrieved
frames (recall), and the share of retrieved seconds inside the ground truth (precision). Here the
"retrieved" spans are the time spans of the blocks the answer used (`ans.evidence`), so the measure
works for every policy and any block length.
"""

from __future__ import annotations

from typing import Iterable, Sequence

Span = tuple[float, float]


def merge(spans: Iterable[Span]) -> list[Span]:
    """Union of spans as sorted, disjoint spans (empty spans dropped)."""
    out: list[list[float]] = []
    for a, b in sorted((float(a), float(b)) for a, b in spans if b > a):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def length(spans: Iterable[Span]) -> float:
    return sum(b - a for a, b in merge(spans))


def intersection(x: Iterable[Span], y: Iterable[Span]) -> float:
    """Seconds covered by both span sets."""
    xs, ys = merge(x), merge(y)
    total, i, j = 0.0, 0, 0
    while i < len(xs) and j < len(ys):
        total += max(0.0, min(xs[i][1], ys[j][1]) - max(xs[i][0], ys[j][0]))
        if xs[i][1] < ys[j][1]:
            i += 1
        else:
            j += 1
    return total


def retrieval_scores(used: Sequence[Span], truth: Sequence[Span]) -> dict[str, float]:
    """ReKV's recall / precision / F1 between the spans an answer used and the ground-truth windows."""
    inter = intersection(used, truth)
    gt_len, used_len = length(truth), length(used)
    recall = inter / gt_len if gt_len > 0 else 0.0
    precision = inter / used_len if used_len > 0 else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"recall": recall, "precision": precision, "f1": f1}


def blocks_in(blocks: Sequence[Span], windows: Sequence[Span]) -> set[int]:
    """Indices of blocks whose midpoint lies inside one of the windows (ends inclusive)."""
    return {i for i, (a, b) in enumerate(blocks) if any(w0 <= (a + b) / 2 <= w1 for w0, w1 in windows)}


def needle_block_recall(blocks: Sequence[Span], windows: Sequence[Span], used: Sequence[Span]) -> float | None:
    """Share of the needle's blocks (stream blocks inside the evidence windows) that the answer used.

    A block counts as used when its midpoint falls in one of the `used` spans. None when no block seen
    so far lies in a window (the needle has not been streamed yet).
    """
    needle = blocks_in(blocks, windows)
    if not needle:
        return None
    return len(needle & blocks_in(blocks, used)) / len(needle)
