"""OVO-Bench (ovo_bench_new.json): backward tracing, real-time perception and forward active responding.

Backward (EPM, ASI, HLD) and real-time (STU, OJR, ATR, FPD, ACR, OCR) records are multiple choice asked
at `realtime` (gt = 0-based option index). Forward records are probed at every `test_info[i].realtime`:
CRR "can the question be answered yet?" (type 1 = Yes), SSR "is this step being performed now?"
(type 1 = Yes), REC "how many times so far?" (count). Each probe is one normalized question.
"""

from __future__ import annotations

from typing import Any

from longwatch.eval.formats.schema import Bench, Question, group_videos, video_id_of

TRACKS = {
    "backward": ("EPM", "ASI", "HLD"),
    "realtime": ("STU", "OJR", "ATR", "FPD", "ACR", "OCR"),
    "forward": ("REC", "SSR", "CRR"),
}
TASK_TRACK = {t: track for track, tasks in TRACKS.items() for t in tasks}


def _mc(rec: dict, base: dict) -> list[Question]:
    options = tuple(str(o) for o in rec["options"])
    gt = int(rec["gt"])
    if not 0 <= gt < len(options):
        raise ValueError(f"gt {gt} is not an index of the {len(options)} options")
    return [Question(**base, qid=str(rec["id"]), question=str(rec["question"]), kind="mc", answer=options[gt],
                     choices=options, answer_index=gt, ask_time_s=float(rec["realtime"]))]


def _forward(rec: dict, base: dict) -> list[Question]:
    task, out = rec["task"], []
    windows: tuple[tuple[float, float], ...] = ()
    if task == "REC":
        windows = tuple((float(a), float(b)) for a, b in zip(rec["start_times"], rec["end_times"]))
    for i, probe in enumerate(rec["test_info"]):
        qid, t = f"{rec['id']}/{i}", float(probe["realtime"])
        extra = {"parent": str(rec["id"]), "probe": i}
        if task == "CRR":
            text = (f"Question: {rec['question']}\nDo the frames seen so far, especially the latest ones, give "
                    "enough information to answer this question? Answer only Yes or No.")
            ans, kind = ("Yes" if probe["type"] == 1 else "No"), "yesno"
            extra.update(clue_time_s=float(rec["clue_time"]), ask_time_s=float(rec["ask_time"]),
                         original_question=rec["question"], original_answer=rec["answer"])
        elif task == "SSR":
            text = (f"This tutorial ({rec['tutorial']}) is a sequence of steps. Step: {probe['step']}\n"
                    "Is the person performing this step right now? Answer only Yes or No.")
            ans, kind = ("Yes" if probe["type"] == 1 else "No"), "yesno"
            j = rec["all_steps"].index(probe["step"]) if probe["step"] in rec["all_steps"] else None
            if j is not None:
                windows = ((float(rec["start_time"][j]), float(rec["end_time"][j])),)
        elif task == "REC":
            text = (f"People in this video may repeat an action: {rec['activity']}. How many times has it been "
                    "performed so far, counting every person? Answer with a single number.")
            ans, kind = str(int(probe["count"])), "count"
        else:
            raise ValueError(f"unknown forward task {task!r}")
        out.append(Question(**base, qid=qid, question=text, kind=kind, answer=ans, ask_time_s=t,
                            evidence_windows=windows, extra=extra))
    return out


def load_ovobench(data: Any, source: str, name: str) -> Bench:
    questions: list[Question] = []
    for r, rec in enumerate(data):
        try:
            task = str(rec["task"])
            if task not in TASK_TRACK:
                raise ValueError(f"unknown task {task!r} (known: {', '.join(TASK_TRACK)})")
            base = dict(video_id=video_id_of(rec["video"]), video_path=str(rec["video"]), task=task)
            questions += _forward(rec, base) if TASK_TRACK[task] == "forward" else _mc(rec, base)
        except (KeyError, ValueError, TypeError) as e:
            detail = f"missing '{e.args[0]}'" if isinstance(e, KeyError) else str(e)
            raise ValueError(f"record {r} (id {rec.get('id') if isinstance(rec, dict) else '?'}): {detail}") from None
    for q in questions:
        q.extra["track"] = TASK_TRACK[q.task]
    return Bench(name, "ovobench", source, group_videos(questions), extra={"records": len(data)})
