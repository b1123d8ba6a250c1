"""Find the times a question names ("at 01:30", "between 2:00 and 3:10", "5 minutes ago") as second ranges."""

from __future__ import annotations

import re

_NUM_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
              "eight": 8, "nine": 9, "ten": 10, "fifteen": 15, "twenty": 20, "thirty": 30, "forty": 40,
              "forty-five": 45, "fifty": 50, "sixty": 60, "ninety": 90, "half a": 0.5, "half an": 0.5}
_UNIT = {"h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
         "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
         "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1}

_CLOCK = r"(?:\d{1,2}:)?\d{1,2}:\d{2}(?:\.\d+)?"
_AMOUNT = r"(?:\d+(?:\.\d+)?|" + "|".join(sorted(map(re.escape, _NUM_WORDS), key=len, reverse=True)) + r")"
_UNITS = r"(?:hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s)"
_DURATION = rf"{_AMOUNT}\s*{_UNITS}\b"
_POINT = rf"(?:{_CLOCK}|\d+(?:\.\d+)?\s*{_UNITS}\b)"

POINT_SLACK_S = 1.0
"""A named instant matches blocks within this many seconds of it (one 2-fps temporal patch)."""


def _amount(text: str) -> float:
    text = text.strip().lower()
    return float(text) if re.fullmatch(r"\d+(?:\.\d+)?", text) else float(_NUM_WORDS[text])


def parse_clock(text: str) -> float:
    """'1:30' -> 90, '01:02:03' -> 3723, '95.5 s' -> 95.5, '2 min' -> 120."""
    text = text.strip().lower()
    if ":" in text:
        secs = 0.0
        for part in text.split(":"):
            secs = secs * 60 + float(part)
        return secs
    m = re.fullmatch(rf"({_AMOUNT})\s*({_UNITS})", text)
    if not m:
        raise ValueError(f"not a time: {text!r}")
    return _amount(m.group(1)) * _UNIT[m.group(2)]


def _duration(text: str) -> float:
    m = re.fullmatch(rf"({_AMOUNT})\s*({_UNITS})", text.strip().lower())
    if not m:
        raise ValueError(f"not a duration: {text!r}")
    return _amount(m.group(1)) * _UNIT[m.group(2)]


def _duration_or_unit(text: str) -> float:
    """'2 minutes' -> 120; a bare unit ('minute') means one of it."""
    text = text.strip().lower()
    return float(_UNIT[text]) if text in _UNIT else _duration(text)


def parse_time_ranges(question: str, now: float | None = None) -> list[tuple[float, float]]:
    """Second ranges named by `question`, relative to stream start; `now` anchors "ago" and "last".

    Points become [t - 1, t + 1]. Ranges: "between A and B", "from A to B", "A-B", "in the first D",
    "in the last D", "D ago", "at A", bare clock times. Unparseable text yields [].
    """
    q = question.lower()
    out: list[tuple[float, float]] = []
    taken: list[tuple[int, int]] = []

    def take(m: re.Match) -> bool:
        if any(a < m.end() and m.start() < b for a, b in taken):
            return False
        taken.append((m.start(), m.end()))
        return True

    for m in re.finditer(rf"\b(?:between|from)\s+({_POINT})\s+(?:and|to|until|till)\s+({_POINT})", q):
        if take(m):
            a, b = parse_clock(m.group(1)), parse_clock(m.group(2))
            out.append((min(a, b), max(a, b)))
    for m in re.finditer(rf"({_CLOCK})\s*(?:-|–|to)\s*({_CLOCK})", q):
        if take(m):
            a, b = parse_clock(m.group(1)), parse_clock(m.group(2))
            out.append((min(a, b), max(a, b)))
    for m in re.finditer(rf"\b(?:in|during|within|over)\s+the\s+first\s+({_DURATION}|{_UNITS})", q):
        if take(m):
            out.append((0.0, _duration_or_unit(m.group(1))))
    for m in re.finditer(rf"\b(?:in|during|within|over)\s+the\s+(?:last|past|previous)\s+({_DURATION}|{_UNITS})", q):
        if take(m) and now is not None:
            out.append((max(0.0, now - _duration_or_unit(m.group(1))), now))
    for m in re.finditer(rf"\b({_DURATION})\s+ago\b", q):
        if take(m) and now is not None:
            t = max(0.0, now - _duration(m.group(1)))
            out.append((max(0.0, t - POINT_SLACK_S), t + POINT_SLACK_S))
    for m in re.finditer(r"\b(?:at|around|near|by)\s+(?:minute|min)\s+(\d+(?:\.\d+)?)\b", q):
        if take(m):
            t = float(m.group(1)) * 60
            out.append((t, t + 60))
    for m in re.finditer(rf"(?:\bat|\baround|\bnear|\bby|\bafter|\bbefore|^|\s|\()\s*({_POINT})", q):
        span = (m.start(1), m.end(1))
        if any(a < span[1] and span[0] < b for a, b in taken):
            continue
        text = m.group(1)
        if ":" not in text and not re.search(r"\b(at|around|near|by)\s*$", q[: m.start(1)]):
            continue  # bare "5 seconds" without "at" is a duration, not a time
        taken.append(span)
        t = parse_clock(text)
        out.append((max(0.0, t - POINT_SLACK_S), t + POINT_SLACK_S))
    return out
