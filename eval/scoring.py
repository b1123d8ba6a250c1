"""Per-question scoring: answer extraction (letters, yes/no, numbers, time spans, orders) and the match rules.

Conventions follow the original benchmarks where they differ: OVO-Bench REC joins every digit of the
reply and compares with the count; StreamingBench proactive answers must come within 2 s of the
ground-truth moment and contain the expected output. Open answers get normalized exact match and,
when a judge is given, the judge's score (RVS is GPT-judged in the papers; the hook is off by default).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import Any, Callable

from longwatch.eval.formats.schema import LETTERS, Question

Judge = Callable[[Question, str], float]
"""(question, reply) -> score in [0, 1]; e.g. an LLM judge for RVS-style open answers."""

PROACTIVE_TOLERANCE_S = 2.0
MRA_THRESHOLDS = tuple(0.5 + 0.05 * i for i in range(10))  # 0.50 .. 0.95


@dataclass
class Score:
    """score in [0, 1]; correct is None when the question has no gold answer; metrics are kind-specific."""

    score: float | None
    correct: bool | None
    pred: str | None
    metrics: dict[str, Any] = field(default_factory=dict)


def normalize(text: str) -> str:
    """Lowercase, drop punctuation and articles, squeeze spaces (SQuAD-style)."""
    text = str(text).lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(w for w in text.split() if w not in ("a", "an", "the"))


def extract_choice(reply: str, choices: tuple[str, ...] | list[str]) -> str | None:
    """The option letter a reply picks: 'B', '(B)', 'B. text', 'Answer: B', 'The answer is B'; else the one
    option whose text the reply contains; else None."""
    n = len(choices)
    valid = LETTERS[:n]
    s = str(reply).strip()
    if len(s) == 1 and s.upper() in valid:
        return s.upper()
    patterns = (
        rf"^\(?([{valid}])\)?(?:[.:)]|\s*$|\s*\n)",                 # 'B', '(B)', 'B.', 'B) ...'
        rf"(?i:answer|option|choice)\s*(?:is|:)?\s*\(?([{valid}])\b",  # 'The answer is B'
        rf"\(([{valid}])\)",                                        # '(B)' anywhere
        rf"\b([{valid}])[.)]\s",                                    # '... B. because'
    )
    for p in patterns:
        m = re.search(p, s)
        if m:
            return m.group(1)
    norm = normalize(s)
    hits = [i for i, c in enumerate(choices) if normalize(c) and normalize(c) in norm]
    return valid[hits[0]] if len(hits) == 1 else None


def parse_yesno(reply: str) -> str | None:
    """First yes/no word of the reply ('Y'/'N' alone count too, as in OVO-Bench)."""
    s = str(reply).strip()
    if s.upper() in ("Y", "N"):
        return "Yes" if s.upper() == "Y" else "No"
    m = re.search(r"\b(yes|no)\b", s, flags=re.IGNORECASE)
    return m.group(1).capitalize() if m else None


_NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve".split())}


def parse_number(reply: str) -> float | None:
    """First number in the reply (digits or a number word up to twelve)."""
    m = re.search(r"-?\d+(?:\.\d+)?", str(reply))
    if m:
        return float(m.group())
    for w in re.findall(r"[a-z]+", str(reply).lower()):
        if w in _NUMBER_WORDS:
            return float(_NUMBER_WORDS[w])
    return None


def parse_span(reply: str) -> tuple[float, float] | None:
    """A time span from '12.5-15', 'from 12 to 15 seconds', '00:12 - 00:15', '[12, 15]'."""
    times = [_seconds(t) for t in re.findall(r"\d+:\d{1,2}(?::\d{1,2})?(?:\.\d+)?|\d+(?:\.\d+)?", str(reply))]
    if len(times) < 2:
        return None
    a, b = times[0], times[1]
    return (min(a, b), max(a, b))


def _seconds(token: str) -> float:
    parts = [float(p) for p in token.split(":")]
    return sum(p * 60**i for i, p in enumerate(reversed(parts)))


def temporal_iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Intersection over union of two [start, end] spans (0 when disjoint or degenerate)."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def mean_relative_accuracy(pred: float, gold: float) -> float:
    """VSI-Bench MRA: share of thresholds t in 0.50..0.95 with |pred - gold| / gold < 1 - t (gold 0 -> 1)."""
    rel = abs(pred - gold) / max(abs(gold), 1.0)
    return sum(rel < 1 - t for t in MRA_THRESHOLDS) / len(MRA_THRESHOLDS)


def pairwise_order(pred: list[str], gold: list[str]) -> float:
    """Share of gold item pairs whose relative order the prediction keeps (missing items count wrong)."""
    pos = {x: i for i, x in enumerate(pred)}
    pairs = [(gold[i], gold[j]) for i in range(len(gold)) for j in range(i + 1, len(gold))]
    if not pairs:
        return float(pred[:1] == gold[:1])
    return sum(a in pos and b in pos and pos[a] < pos[b] for a, b in pairs) / len(pairs)


def parse_order(reply: str, labels: list[str]) -> list[str]:
    """The labels in the order the reply first mentions them."""
    low = str(reply).lower()
    found = [(low.find(lab.lower()), lab) for lab in labels if lab.lower() in low]
    return [lab for _, lab in sorted(found)]


def _open(q: Question, reply: str, judge: Judge | None) -> Score:
    em = q.answer is not None and normalize(reply) == normalize(q.answer)
    contains = q.answer is not None and bool(normalize(q.answer)) and normalize(q.answer) in normalize(reply)
    metrics: dict[str, Any] = {"exact_match": float(em), "contains": float(contains)}
    score = float(em)
    if judge is not None and q.answer is not None:
        score = metrics["judge"] = float(judge(q, reply))
    return Score(score if q.answer is not None else None, em if q.answer is not None else None, reply.strip(), metrics)


def score_question(q: Question, reply: str, fmt: str = "", judge: Judge | None = None,
                   response_time_s: float | None = None) -> Score:
    """Score one reply to `q`; `fmt` picks benchmark conventions; `response_time_s` is for proactive questions."""
    reply = reply or ""
    if q.kind == "mc":
        pred = extract_choice(reply, q.choices)
        if q.answer_letter is None:
            return Score(None, None, pred)
        ok = pred == q.answer_letter
        return Score(float(ok), ok, pred)
    if q.kind == "yesno":
        pred = parse_yesno(reply)
        ok = pred is not None and pred == q.answer
        return Score(float(ok), ok, pred)
    if q.kind == "count":
        if fmt == "ovobench":  # OVO-Bench REC: all digits of the reply, joined, equal the count
            pred_s = "".join(re.findall(r"\d+", reply))
            ok = pred_s == str(q.answer)
            return Score(float(ok), ok, pred_s or None)
        num = parse_number(reply)
        gold = float(q.answer)
        ok = num is not None and num == gold
        mra = mean_relative_accuracy(num, gold) if num is not None else 0.0
        return Score(float(ok), ok, None if num is None else f"{num:g}", {"mra": mra})
    if q.kind == "span":
        gold = tuple(float(x) for x in q.extra["answer_span"])
        span = parse_span(reply)
        iou = temporal_iou(span, gold) if span else 0.0
        metrics = {"tiou": iou, **{f"r@{t}": float(iou >= t) for t in (0.3, 0.5, 0.7)}}
        if span:
            metrics["onset_error_s"] = abs(span[0] - gold[0])
        return Score(iou, iou >= 0.5, None if span is None else f"{span[0]:g}-{span[1]:g}", metrics)
    if q.kind == "order":
        gold = [s.strip() for s in str(q.answer).split(",")]
        pred = parse_order(reply, list(q.extra.get("labels", gold)))
        pw = pairwise_order(pred, gold)
        ok = pred == gold
        return Score(pw, ok, ", ".join(pred) or None, {"exact_order": float(ok), "pairwise": pw})
    if q.kind == "proactive":
        gt = float(q.extra["gt_time_s"])
        on_time = response_time_s is not None and abs(response_time_s - gt) <= PROACTIVE_TOLERANCE_S
        said = q.answer is not None and q.answer in reply
        ok = on_time and said
        return Score(float(ok), ok, reply.strip() or None,
                     {"time_correct": float(on_time), "answer_correct": float(ok), "response_time_s": response_time_s})
    return _open(q, reply, judge)
