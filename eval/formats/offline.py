"""Offline long-video sets, asked after the whole video: MLVU dev, LongVideoBench, Video-MME, EgoSchema, CG-Bench.

MLVU dev: {video, duration, question, candidates?, answer (text), question_type}; generation tasks
(sub_scene, summary) have no candidates. LongVideoBench: {id, video_id, video_path, question, candidates,
correct_choice (index), question_category, duration}. Video-MME: the official template (per video,
questions with lettered options and a letter answer) or lmms-eval's flat docs (videoID, ...).
EgoSchema: lmms-eval docs {video_idx, question, option[5], answer} or questions.json {q_uid, option 0..4}.
CG-Bench: {video_uid, qid, question, choices, right_answer, duration, clue_intervals?}.
"""

from __future__ import annotations

from typing import Any, Callable

from longwatch.eval.formats.schema import Bench, Question, group_videos, letter_index, strip_letter

# MLVU question_type -> folder of its videos in the MLVU tree.
MLVU_FOLDERS = {"plotQA": "1_plotQA", "findNeedle": "2_needle", "ego": "3_ego", "count": "4_count",
                "order": "5_order", "anomaly_reco": "6_anomaly_reco", "topic_reasoning": "7_topic_reasoning",
                "subPlot": "8_sub_scene", "summary": "9_summary"}


def _mc(qid: str, vid: str, path: str, question: str, task: str, choices: list, answer: Any, **kw: Any) -> Question:
    """Multiple choice whose answer is given as choice text, a letter or a 0-based index (None = unknown)."""
    choices_t = tuple(strip_letter(str(c)) for c in choices)
    if answer is None:
        index = None
    elif isinstance(answer, int) and not isinstance(answer, bool):
        index = answer if 0 <= answer < len(choices_t) else None
        if index is None:
            raise ValueError(f"answer index {answer} out of range for {len(choices_t)} choices")
    elif str(answer) in choices_t:
        index = choices_t.index(str(answer))
    elif strip_letter(str(answer)) in choices_t and strip_letter(str(answer)) != str(answer):
        index = choices_t.index(strip_letter(str(answer)))
    else:
        index = letter_index(answer, len(choices_t))
        if index is None:
            raise ValueError(f"answer {answer!r} is neither a choice, a letter nor an index")
    return Question(qid, vid, path, question, task, "mc", answer=None if index is None else choices_t[index],
                    choices=choices_t, answer_index=index, **kw)


def _mlvu(rec: dict, i: int) -> Question:
    task = str(rec["question_type"])
    folder = MLVU_FOLDERS.get(task)
    path = f"{folder}/{rec['video']}" if folder else str(rec["video"])
    vid, q = str(rec["video"]).rsplit(".", 1)[0], str(rec["question"])
    if rec.get("candidates"):
        return _mc(f"{vid}/{i}", vid, path, q, task, rec["candidates"], rec["answer"])
    extra = {"scoring_points": rec["scoring_points"]} if "scoring_points" in rec else {}
    return Question(f"{vid}/{i}", vid, path, q, task, "open", answer=str(rec["answer"]), extra=extra)


def _lvb(rec: dict, i: int) -> Question:
    extra = {k: rec[k] for k in ("subtitle_path", "starting_timestamp_for_subtitles", "duration_group", "level",
                                 "topic_category", "position", "question_wo_referring_query") if k in rec}
    return _mc(str(rec["id"]), str(rec["video_id"]), str(rec["video_path"]), str(rec["question"]),
               str(rec["question_category"]), rec["candidates"], int(rec["correct_choice"]), extra=extra)


def _videomme_flat(rec: dict, i: int) -> Question:
    vid = str(rec["videoID"])
    return _mc(str(rec["question_id"]), vid, f"{vid}.mp4", str(rec["question"]), str(rec["task_type"]),
               rec["options"], rec.get("answer"), extra={"duration_bucket": rec.get("duration")})


def _egoschema(rec: dict, i: int) -> Question:
    if "q_uid" in rec:  # questions.json: options are "option 0".."option 4"; answers ship separately
        vid, options = str(rec["q_uid"]), [rec[f"option {k}"] for k in range(5)]
    else:
        vid, options = str(rec["video_idx"]), rec["option"]
    return _mc(vid, vid, f"{vid}.mp4", str(rec["question"]), "egoschema", options, rec.get("answer"))


def _cgbench(rec: dict, i: int) -> Question:
    vid = str(rec["video_uid"])
    windows = tuple((float(a), float(b)) for a, b in rec.get("clue_intervals") or ())
    return _mc(str(rec["qid"]), vid, f"{vid}.mp4", str(rec["question"]), str(rec.get("sub_category", "cgbench")),
               rec["choices"], rec.get("right_answer"), evidence_windows=windows,
               extra={"domain": rec.get("domain")})


FLAT: dict[str, Callable[[dict, int], Question]] = {
    "mlvu": _mlvu, "longvideobench": _lvb, "videomme": _videomme_flat, "egoschema": _egoschema, "cgbench": _cgbench}


def _durations(data: list, key: str, dur: str = "duration") -> dict[str, float | None]:
    out = {}
    for rec in data:
        d = rec.get(dur)
        out[str(rec.get(key, ""))] = float(d) if isinstance(d, (int, float)) and not isinstance(d, bool) else None
    return out


def load_flat(fmt: str, data: Any, source: str, name: str) -> Bench:
    """Parse a flat list of one-question records in format `fmt` (a key of FLAT)."""
    parse = FLAT[fmt]
    questions = []
    for i, rec in enumerate(data):
        try:
            questions.append(parse(rec, i))
        except (KeyError, ValueError, TypeError) as e:
            detail = f"missing '{e.args[0]}'" if isinstance(e, KeyError) else str(e)
            raise ValueError(f"record {i}: {detail}") from None
    durations: dict[str, float | None] = {}
    if fmt == "longvideobench":
        durations = _durations(data, "video_id")
    elif fmt == "cgbench":
        durations = _durations(data, "video_uid")
    elif fmt == "mlvu":
        durations = {str(r["video"]).rsplit(".", 1)[0]: float(r["duration"]) for r in data if "duration" in r}
    elif fmt == "egoschema":
        durations = {q.video_id: 180.0 for q in questions}  # every EgoSchema clip is 180 s
    return Bench(name, fmt, source, group_videos(questions, durations), offline=True, extra={"records": len(data)})


def load_videomme_template(data: Any, source: str, name: str) -> Bench:
    """The official Video-MME layout: per video {video_id, duration (bucket), questions: [...]}."""
    questions = []
    for r, rec in enumerate(data):
        vid = str(rec["video_id"])
        for j, q in enumerate(rec["questions"]):
            try:
                questions.append(_mc(str(q.get("question_id", f"{vid}/{j}")), vid, f"{vid}.mp4", str(q["question"]),
                                     str(q["task_type"]), q["options"], q.get("answer"),
                                     extra={"duration_bucket": rec.get("duration"), "domain": rec.get("domain")}))
            except (KeyError, ValueError, TypeError) as e:
                detail = f"missing '{e.args[0]}'" if isinstance(e, KeyError) else str(e)
                raise ValueError(f"record {r} (video {vid}), question {j}: {detail}") from None
    return Bench(name, "videomme", source, group_videos(questions), offline=True, extra={"records": len(data)})
