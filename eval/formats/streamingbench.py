"""StreamingBench question files: real, omni, sqa, proactive(_50) and their *_stream variants.

real/omni/proactive: a list of entries {time, questions, video_categories, video_path}; sqa: a list of
per-video lists of such entries; *_stream: a list of per-video {questions, video_path}. A question is
asked at `time_stamp` ("HH:MM:SS"); `answer` is a letter; options may carry an "A. " prefix (sqa has none).
Proactive questions must be answered `ground_truth_output` within 2 s of `ground_truth_time_stamp`.
"""

from __future__ import annotations

from typing import Any

from longwatch.eval.formats.schema import Bench, Question, group_videos, hms_to_s, letter_index, parse_window, strip_letter, video_id_of


def _entries(data: list) -> tuple[list[dict], bool]:
    """Flatten to a list of entries {questions, video_path, ...}; True when the file is the sqa layout."""
    if all(isinstance(x, list) for x in data):
        return [e for group in data for e in group], True
    return list(data), False


def _question(q: dict, entry: dict, qid: str, sequential: bool) -> Question:
    path = str(entry["video_path"])
    task = str(q["task_type"])
    ask = hms_to_s(q["time_stamp"])
    extra: dict[str, Any] = {k: q[k] for k in ("required_ability", "audio_path", "cause", "effect") if k in q}
    window = q.get("time", entry.get("time"))
    if window:
        extra["annotated_window"] = parse_window(window)  # not read by the official eval; kept for reference
    if entry.get("video_categories"):
        extra["video_category"] = entry["video_categories"]
    if sequential:
        extra["sequential"] = True  # the official loop prepends earlier questions and answers of this video
    if task == "Proactive Output" or "ground_truth_time_stamp" in q:
        extra["gt_time_s"] = hms_to_s(q["ground_truth_time_stamp"])
        return Question(qid, video_id_of(path), path, str(q["question"]), task, "proactive",
                        answer=str(q["ground_truth_output"]), ask_time_s=ask, extra=extra)
    choices = tuple(strip_letter(o) for o in q["options"])
    index = letter_index(q["answer"], len(choices))
    if index is None:
        raise ValueError(f"answer {q['answer']!r} is not a letter of the {len(choices)} options")
    return Question(qid, video_id_of(path), path, str(q["question"]), task, "mc", answer=choices[index],
                    choices=choices, answer_index=index, ask_time_s=ask, extra=extra)


def load_streamingbench(data: Any, source: str, name: str) -> Bench:
    entries, sequential = _entries(data)
    questions, seen = [], {}
    for e, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("questions"), list) or "video_path" not in entry:
            raise ValueError(f"entry {e}: expected {{questions: [...], video_path}}")
        vid = video_id_of(entry["video_path"])
        for j, q in enumerate(entry["questions"]):
            n = seen[vid] = seen.get(vid, -1) + 1
            try:
                questions.append(_question(q, entry, f"{vid}/{n}", sequential))
            except (KeyError, ValueError, TypeError) as err:
                detail = f"missing '{err.args[0]}'" if isinstance(err, KeyError) else str(err)
                raise ValueError(f"entry {e} ({entry['video_path']}), question {j}: {detail}") from None
    return Bench(name, "streamingbench", source, group_videos(questions), extra={"records": len(data)})
