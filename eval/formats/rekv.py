"""ReKV's unified video-QA JSON (RVS-Ego/Movie, MLVU, QAEgo4D, ActivityNet-QA, HERMES conversions) and NeedleStream.

A file is a list of video records {video_id, video_path, duration?, conversations: [...]}. Per conversation:
question, answer, choices (multiple choice; answer is the choice text), question_type or task,
start_time/end_time (RVS: evidence window, asked at end_time), end_time alone (HERMES: asked then),
temporal_windows (QAEgo4D grounding). NeedleStream adds qid, kind, ask_time and answer_span.
"""

from __future__ import annotations

from typing import Any

from longwatch.eval.formats.schema import Bench, Question, group_videos, hms_to_s, letter_index

# ActivityNet-QA README: question_type ids.
ACTIVITYNET_TYPES = ("motion", "spatial", "temporal", "yes_no", "color", "object", "location", "number", "other")


def _task(conv: dict, rec: dict, default: str) -> str:
    t = conv.get("task", conv.get("question_type", rec.get("task")))
    if isinstance(t, int) and not isinstance(t, bool):
        return ACTIVITYNET_TYPES[t] if 0 <= t < len(ACTIVITYNET_TYPES) else f"type_{t}"
    return str(t) if t not in (None, "") else default


def _windows(conv: dict) -> tuple[tuple[float, float], ...]:
    if "temporal_windows" in conv:
        return tuple((float(a), float(b)) for a, b in conv["temporal_windows"])
    if "start_time" in conv and "end_time" in conv:
        return ((float(conv["start_time"]), float(conv["end_time"])),)
    return ()


def _ask_time(conv: dict) -> float | None:
    for key in ("ask_time", "end_time"):
        if conv.get(key) is not None:
            return float(conv[key])
    if conv.get("time_stamp"):
        return hms_to_s(conv["time_stamp"])
    return None


def _question(conv: dict, rec: dict, i: int, default_task: str) -> Question:
    vid = str(rec["video_id"])
    choices = tuple(str(c) for c in conv.get("choices") or ())
    answer = conv.get("answer")
    kind = conv.get("kind") or ("mc" if choices else "open")
    index = None
    if kind == "mc":
        if answer in choices:
            index = choices.index(answer)
        else:
            index = letter_index(answer, len(choices))
            if index is None:
                raise ValueError(f"answer {answer!r} is not one of the choices")
            answer = choices[index]
    extra = {k: v for k, v in conv.items() if k not in (
        "question", "answer", "choices", "kind", "qid", "ask_time", "temporal_windows", "task", "question_type")}
    return Question(
        qid=str(conv.get("qid", f"{vid}/{i}")), video_id=vid, video_path=str(rec["video_path"]),
        question=str(conv["question"]), task=_task(conv, rec, default_task), kind=kind,
        answer=None if answer is None else str(answer), choices=choices, answer_index=index,
        ask_time_s=_ask_time(conv), evidence_windows=_windows(conv), extra=extra)


def load_rekv(data: Any, source: str, name: str) -> Bench:
    """Parse a ReKV-format list; `name` (the file stem) is the default task for untyped questions."""
    needle = any("needlestream" in r for r in data if isinstance(r, dict))
    questions, durations = [], {}
    for r, rec in enumerate(data):
        if not isinstance(rec, dict) or not isinstance(rec.get("conversations"), list):
            raise ValueError(f"record {r}: expected {{video_id, video_path, conversations: [...]}}")
        for key in ("video_id", "video_path"):
            if key not in rec:
                raise ValueError(f"record {r}: missing '{key}'")
        durations[str(rec["video_id"])] = float(rec["duration"]) if rec.get("duration") is not None else None
        for i, conv in enumerate(rec["conversations"]):
            try:
                q = _question(conv, rec, i, name)
            except (KeyError, ValueError, TypeError) as e:
                detail = f"missing '{e.args[0]}'" if isinstance(e, KeyError) else str(e)
                raise ValueError(f"record {r} (video {rec['video_id']}), conversation {i}: {detail}") from None
            for k in ("clip_start_time", "clip_end_time"):
                if k in rec:
                    q.extra[k] = rec[k]
            questions.append(q)
    videos = group_videos(questions, durations)
    offline = all(q.ask_time_s is None for q in questions)
    return Bench(name, "needlestream" if needle else "rekv", source, videos, offline=offline,
                 extra={"records": len(data)})
