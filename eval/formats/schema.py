"""One normalized schema for every benchmark: questions grouped per video, with the time they are asked."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

KINDS = ("mc", "open", "yesno", "count", "span", "order", "proactive")
"""mc: pick a choice; open: free text (exact match, optional judge); yesno; count: a number;
span: a time span [start, end] in seconds; order: a comma-separated sequence of labels;
proactive: speak up at the right moment (StreamingBench)."""

LETTERS = "ABCDEFGHIJ"


class BenchFormatError(ValueError):
    """An annotation file is unreadable, of unknown format, or has a bad record; the message names the file."""

    user_facing = True


@dataclass
class Question:
    """One question posed to the stream at `ask_time_s` (None = after the whole video).

    `answer` is the gold text: for mc the text of the correct choice (`answer_index` points at it),
    for yesno "Yes"/"No", for count the number, for span "start-end", for order "a, b, c".
    `evidence_windows` are [start, end] seconds where the answer is visible (ReKV temporal_windows,
    RVS start/end, NeedleStream needles); empty when the benchmark gives none.
    """

    qid: str
    video_id: str
    video_path: str
    question: str
    task: str
    kind: str
    answer: str | None = None
    choices: tuple[str, ...] = ()
    answer_index: int | None = None
    ask_time_s: float | None = None
    evidence_windows: tuple[tuple[float, float], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"question {self.qid}: unknown kind {self.kind!r}")
        if self.kind == "mc":
            if len(self.choices) < 2:
                raise ValueError(f"question {self.qid}: multiple choice needs >= 2 choices")
            if self.answer_index is not None and not 0 <= self.answer_index < len(self.choices):
                raise ValueError(f"question {self.qid}: answer index {self.answer_index} out of range")
        if self.ask_time_s is not None and self.ask_time_s < 0:
            raise ValueError(f"question {self.qid}: negative ask time {self.ask_time_s}")

    @property
    def answer_letter(self) -> str | None:
        return None if self.answer_index is None else LETTERS[self.answer_index]


@dataclass
class Video:
    """A video and its questions, in the order they are asked."""

    video_id: str
    video_path: str
    duration_s: float | None = None
    questions: list[Question] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Bench:
    """One annotation file, normalized. `offline` benchmarks ask every question after the whole video."""

    name: str
    format: str
    source: str
    videos: list[Video]
    offline: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def questions(self) -> list[Question]:
        return [q for v in self.videos for q in v.questions]

    def counts_by_task(self) -> dict[str, int]:
        """Questions per task (forward OVO probes and VNBench tries each count once)."""
        return dict(sorted(Counter(q.task for q in self.questions).items()))

    def summary(self) -> dict[str, Any]:
        return {"file": self.source, "format": self.format, "name": self.name, "offline": self.offline,
                "videos": len(self.videos), "questions": len(self.questions), "tasks": self.counts_by_task(),
                **({"records": self.extra["records"]} if "records" in self.extra else {})}


def group_videos(questions: list[Question], durations: dict[str, float | None] | None = None) -> list[Video]:
    """Group questions per video (first-seen order), each video's questions sorted by ask time (stable)."""
    videos: dict[str, Video] = {}
    for q in questions:
        v = videos.get(q.video_id)
        if v is None:
            v = videos[q.video_id] = Video(q.video_id, q.video_path, (durations or {}).get(q.video_id))
        v.questions.append(q)
    end = float("inf")
    for v in videos.values():
        v.questions.sort(key=lambda q: end if q.ask_time_s is None else q.ask_time_s)
    return list(videos.values())


def hms_to_s(value: str) -> float:
    """'00:03:10' or '0:03:10' or '03:10' -> seconds."""
    parts = str(value).strip().split(":")
    if not 1 <= len(parts) <= 3 or not all(re.fullmatch(r"\d+(\.\d+)?", p) for p in parts):
        raise ValueError(f"not a HH:MM:SS time: {value!r}")
    return float(sum(float(p) * 60**i for i, p in enumerate(reversed(parts))))


def parse_window(value: str) -> tuple[float, float]:
    """StreamingBench '[0:02:23 - 0:02:43]' -> (143.0, 163.0)."""
    m = re.fullmatch(r"\s*\[?\s*([\d:.]+)\s*-\s*([\d:.]+)\s*\]?\s*", str(value))
    if not m:
        raise ValueError(f"not a time window: {value!r}")
    return hms_to_s(m.group(1)), hms_to_s(m.group(2))


_PREFIX = re.compile(r"^\s*\(?([A-J])[.):]\s+")


def strip_letter(option: str) -> str:
    """'A. A map.' -> 'A map.'; options without a letter prefix are returned unchanged."""
    return _PREFIX.sub("", str(option), count=1)


def letter_index(value: Any, n: int) -> int | None:
    """'B' -> 1, 2 -> 2, '3' -> 3 (0-based index given as a number); None when it does not fit."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value < n else None
    s = str(value).strip()
    if len(s) == 1 and s.upper() in LETTERS[:n]:
        return LETTERS.index(s.upper())
    if s.isdigit() and int(s) < n:
        return int(s)
    return None


def video_id_of(path: str) -> str:
    """'./videos/sample_1_real.mp4' -> 'sample_1_real'."""
    name = str(path).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name
