"""VNBench (VideoNIAH): annotation records {video, question, options[4], gt (option text), type, try}
or result lines {video_path, prompt, pred, gt (letter), task_type, try} that embed the question.

Each question exists in 4 tries with shuffled options; scoring is circular (all tries right), so every
try keeps `circular_group` = video + task type.
"""

from __future__ import annotations

import re
from typing import Any

from longwatch.eval.formats.schema import Bench, Question, group_videos, letter_index, video_id_of

_OPTION = re.compile(r"^([A-J])\. (.*)$")


def _from_prompt(prompt: str) -> tuple[str, list[str]]:
    """The user turn of a chat prompt -> (question, options)."""
    user = prompt.split("<|im_start|>user\n", 1)[-1].split("<|im_end|>", 1)[0]
    lines = [ln for ln in user.replace("<image>", "").split("\n") if ln.strip()]
    options = [m.group(2) for ln in lines if (m := _OPTION.match(ln))]
    question = next((ln for ln in lines if not _OPTION.match(ln)), "")
    if not question or len(options) < 2:
        raise ValueError("could not find the question and options in 'prompt'")
    return question.strip(), options


def _record(rec: dict, i: int) -> Question:
    if "prompt" in rec:
        path, task = str(rec["video_path"]), str(rec["task_type"])
        question, options = _from_prompt(rec["prompt"])
        index = letter_index(rec["gt"], len(options))
        extra = {"pred": rec.get("pred"), "model_id": rec.get("model_id")}
    else:
        path, task = str(rec["video"]), str(rec["type"])
        question, options = str(rec["question"]), [str(o) for o in rec["options"]]
        index = options.index(rec["gt"]) if rec["gt"] in options else letter_index(rec["gt"], len(options))
        extra = {}
    if index is None:
        raise ValueError(f"gt {rec['gt']!r} is not one of the options")
    vid = video_id_of(path)
    extra.update(circular_group=f"{vid}|{task}", attempt=int(rec.get("try", 0)))
    return Question(f"{vid}/{task}/{rec.get('try', i)}", vid, path, question, task, "mc", answer=options[index],
                    choices=tuple(options), answer_index=index, extra=extra)


def load_vnbench(data: Any, source: str, name: str) -> Bench:
    questions = []
    for i, rec in enumerate(data):
        try:
            questions.append(_record(rec, i))
        except (KeyError, ValueError, TypeError) as e:
            detail = f"missing '{e.args[0]}'" if isinstance(e, KeyError) else str(e)
            raise ValueError(f"record {i}: {detail}") from None
    return Bench(name, "vnbench", source, group_videos(questions), offline=True, extra={"records": len(data)})
