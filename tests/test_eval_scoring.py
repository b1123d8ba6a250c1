"""Scorers on hand-made cases: answer extraction, each benchmark's averaging rules, retrieval measures."""

from __future__ import annotations

import pytest

from longwatch.eval.formats.schema import Question
from longwatch.eval.scoring import (extract_choice, mean_relative_accuracy, pairwise_order, parse_span, parse_yesno,
                          score_question, temporal_iou)
from longwatch.eval.scoring_bench import aggregate
from longwatch.eval.scoring_retrieval import needle_block_recall, retrieval_scores

CHOICES = ("A compass.", "A map.", "An altitude meter.", "A weather radar.")


@pytest.mark.parametrize("reply, letter", [
    ("B", "B"), ("(B)", "B"), ("B. A map.", "B"), ("b", "B"), ("The answer is C.", "C"), ("Answer: D", "D"),
    ("I would pick (C) here", "C"), ("A map.", "B"), ("the answer is a map", "B"), ("Option A", "A"),
    ("none of them", None), ("", None), ("E", None),
])
def test_letter_extraction(reply, letter):
    assert extract_choice(reply, CHOICES) == letter


def q(kind: str, answer: str | None = None, **kw) -> Question:
    return Question("q1", "v", "v.mp4", "?", kw.pop("task", "t"), kind, answer=answer, **kw)


def test_multiple_choice_and_yes_no():
    mc = q("mc", "A map.", choices=CHOICES, answer_index=1)
    assert score_question(mc, "B").correct and not score_question(mc, "C").correct
    assert score_question(mc, "I think it is a map").score == 1.0
    yn = q("yesno", "No")
    assert parse_yesno("N") == "No" and parse_yesno("Yes, it is.") == "Yes"
    assert score_question(yn, "No.").correct and not score_question(yn, "maybe").correct


def test_ovobench_rec_joins_digits_like_the_official_scorer():
    rec = q("count", "12")
    assert score_question(rec, "1 2", fmt="ovobench").correct  # digits joined: "12"
    assert not score_question(rec, "12 times, then 3", fmt="ovobench").correct  # "123"
    assert score_question(q("count", "3"), "three", fmt="needlestream").correct


def test_counting_mean_relative_accuracy():
    assert mean_relative_accuracy(10, 10) == 1.0
    assert mean_relative_accuracy(9, 10) == pytest.approx(0.8)  # rel 0.1 < 1 - t for t in 0.50..0.85
    assert mean_relative_accuracy(20, 10) == 0.0
    assert mean_relative_accuracy(1, 0) == 0.0 and mean_relative_accuracy(0, 0) == 1.0
    assert score_question(q("count", "10"), "9").metrics["mra"] == pytest.approx(0.8)


def test_temporal_iou_recall_at_and_onset():
    assert temporal_iou((10, 20), (15, 25)) == pytest.approx(5 / 15)
    assert temporal_iou((0, 1), (2, 3)) == 0.0
    assert parse_span("from 00:12 to 00:15") == (12.0, 15.0) and parse_span("[15, 12.5]") == (12.5, 15.0)
    span = q("span", "10-20", extra={"answer_span": [10.0, 20.0]})
    s = score_question(span, "It was shown 12-20 s")
    assert s.score == pytest.approx(0.8) and s.metrics["r@0.7"] == 1.0 and s.metrics["onset_error_s"] == 2.0
    s = score_question(span, "11 to 25")
    assert s.metrics["r@0.5"] == 1.0 and s.metrics["r@0.7"] == 0.0
    assert score_question(span, "no idea").score == 0.0


def test_ordering():
    assert pairwise_order(["a", "b", "c"], ["a", "b", "c"]) == 1.0
    assert pairwise_order(["b", "a", "c"], ["a", "b", "c"]) == pytest.approx(2 / 3)
    order = q("order", "red circle, green square, blue triangle",
              extra={"labels": ["red circle", "green square", "blue triangle"]})
    s = score_question(order, "Blue triangle, then red circle, then green square")
    assert s.metrics["exact_order"] == 0.0 and s.score == pytest.approx(1 / 3)
    assert score_question(order, "red circle, green square, blue triangle").correct


def test_proactive_within_two_seconds_and_saying_the_output():
    pro = q("proactive", "Break point", extra={"gt_time_s": 625.0})
    assert score_question(pro, "Break point!", response_time_s=627.0).correct
    late = score_question(pro, "Break point", response_time_s=628.0)
    assert not late.correct and late.metrics["time_correct"] == 0.0
    wrong = score_question(pro, "Deuce", response_time_s=625.0)
    assert wrong.metrics["time_correct"] == 1.0 and not wrong.correct
    assert not score_question(pro, "", response_time_s=None).correct


def test_open_exact_match_and_judge_hook():
    op = q("open", "Chopping vegetables.")
    assert score_question(op, "chopping vegetables").correct
    assert score_question(op, "He is chopping vegetables").score == 0.0
    judged = score_question(op, "He is chopping vegetables", judge=lambda question, reply: 0.9)
    assert judged.score == 0.9 and judged.metrics == {"exact_match": 0.0, "contains": 1.0, "judge": 0.9}


def rec(task: str, score: float, **kw) -> dict:
    return {"task": task, "score": score, "correct": score == 1.0, "kind": kw.pop("kind", "mc"),
            "qid": kw.pop("qid", task), "metrics": kw.pop("metrics", {}), "extra": kw.pop("extra", {}), **kw}


def test_ovobench_task_then_track_averages():
    records = ([rec("EPM", 1.0)] * 3 + [rec("EPM", 0.0)] + [rec("ASI", 0.0)] * 2 +  # backward: (0.75 + 0) / 2
               [rec("OCR", 1.0)] +  # realtime: 1.0
               [rec("SSR", 1.0, kind="yesno")] * 9 + [rec("SSR", 0.0, kind="yesno")] +  # forward: 0.9
               [rec("REC", 0.5, kind="count")] * 2)  # REC 0.5 -> forward (0.9 + 0.5) / 2
    agg = aggregate(records, "ovobench")
    assert agg["tasks"]["EPM"] == {"accuracy": 0.75, "n": 4}
    assert agg["tracks"] == pytest.approx({"backward": 0.375, "realtime": 1.0, "forward": 0.7})
    assert agg["accuracy"] == pytest.approx((0.75 + 0 + 1.0 + 0.9 + 0.5) / 5)  # mean over tasks


def test_streamingbench_per_task_and_proactive():
    records = [rec("Counting", 1.0), rec("Counting", 0.0), rec("OCR", 1.0),
               rec("Proactive Output", 1.0, kind="proactive", metrics={"time_correct": 1.0, "answer_correct": 1.0}),
               rec("Proactive Output", 0.0, kind="proactive", metrics={"time_correct": 1.0, "answer_correct": 0.0})]
    agg = aggregate(records, "streamingbench")
    assert agg["tasks"]["Counting"]["accuracy"] == 0.5 and agg["accuracy"] == pytest.approx(2 / 3)
    assert agg["proactive"] == {"time_accuracy": 1.0, "answer_accuracy": 0.5, "n": 2}


def test_vnbench_circular_evaluation():
    group = lambda g, scores: [rec("cnt", s, qid=f"{g}{i}", extra={"circular_group": g})  # noqa: E731
                               for i, s in enumerate(scores)]
    records = group("v1", [1, 1, 1, 1]) + group("v2", [1, 1, 1, 0]) + [rec("ord", 1.0, extra={"circular_group": "v3"})]
    agg = aggregate(records, "vnbench")
    assert agg["tasks"]["cnt"] == {"accuracy": 0.5, "n": 2}  # 7/8 tries right, but only v1 is right 4 times
    assert agg["accuracy"] == pytest.approx((0.5 + 1.0) / 2) and agg["per_try_accuracy"] == pytest.approx(8 / 9)


def test_rekv_retrieval_recall_precision_f1():
    # ground truth 4-6 s; the answer used 5-7 s and 20-21 s: 1 s of overlap, 2 s of truth, 3 s used
    r = retrieval_scores([(5, 7), (20, 21)], [(4, 6)])
    assert r["recall"] == pytest.approx(0.5) and r["precision"] == pytest.approx(1 / 3)
    assert r["f1"] == pytest.approx(2 * 0.5 / 3 / (0.5 + 1 / 3))
    assert retrieval_scores([], [(4, 6)]) == {"recall": 0.0, "precision": 0.0, "f1": 0.0}
    assert retrieval_scores([(0, 10), (3, 5)], [(4, 6)])["precision"] == pytest.approx(0.2)  # overlaps merged


def test_needle_block_recall():
    blocks = [(float(i), float(i + 1)) for i in range(10)]  # 1 s blocks
    assert needle_block_recall(blocks, [(3, 5)], used=[(3, 4), (8, 9)]) == 0.5  # blocks 3, 4 are the needle
    assert needle_block_recall(blocks, [(3, 5)], used=[(0, 10)]) == 1.0
    assert needle_block_recall(blocks[:2], [(3, 5)], used=[(0, 2)]) is None  # not streamed yet
