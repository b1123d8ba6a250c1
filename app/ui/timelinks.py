"""Turn the times written in chat text (`01:30`, `95.5 s`, `<95.5 seconds>`) into links that seek the player."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from longwatch.memory.retrieval import parse_clock

# Clock times (01:30, 1:02:03, 01:30.5) and amounts with a time unit (95.5 s, 12 sec, 3 minutes, 2 min).
# Single-letter "m"/"h" are left out on purpose: in free text they are metres and hours of a
# schedule more often than positions in a video. `<95.5 seconds>` is the prompt's own timestamp form.
_CLOCK = r"(?<![\d:.])(?:\d{1,2}:)?\d{1,2}:\d{2}(?:\.\d+)?(?![\d:])"
_AMOUNT = r"(?<![\w.])\d+(?:\.\d+)?\s*(?:seconds?|secs?|s|minutes?|mins?)(?![\w])"
_TIME = re.compile(rf"<\s*(?P<tag>\d+(?:\.\d+)?)\s*seconds?\s*>|(?P<clock>{_CLOCK})|(?P<amount>{_AMOUNT})",
                   re.IGNORECASE)
SEEK_PREFIX = "#t="
"""Links are `<a href="#t=SECONDS">`: the page script seeks the player on click (app/ui/assets.py)."""


@dataclass(frozen=True)
class TimeMention:
    start: int
    """Character span of the mention in the text."""
    end: int
    seconds: float


def find_times(text: str) -> list[TimeMention]:
    """Every time mentioned in `text`, in order, as seconds from the start of the video."""
    out = []
    for m in _TIME.finditer(text):
        if m.group("tag") is not None:
            seconds = float(m.group("tag"))
        else:
            try:
                seconds = parse_clock(m.group(0))
            except (ValueError, KeyError):
                continue
        out.append(TimeMention(m.start(), m.end(), seconds))
    return out


def format_clock(seconds: float) -> str:
    """95.5 -> '01:35', 3723 -> '1:02:03' (what the player's own time display shows)."""
    s = max(0, int(seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60:02d}:{rest % 60:02d}"


def seek_link(seconds: float, label: str | None = None) -> str:
    """An HTML anchor that seeks the player to `seconds`; `label` is escaped (default: the clock time)."""
    text = html.escape(label if label is not None else format_clock(seconds))
    return (f'<a class="lw-seek" href="{SEEK_PREFIX}{seconds:.2f}" '
            f'title="seek to {format_clock(seconds)}">{text}</a>')


def linkify(text: str) -> str:
    """Escape `text` for the chat's HTML and wrap every time in a seek link.

    Model output and user questions are untrusted: everything outside a time mention is escaped, so
    only the links we build here reach the page as markup.
    """
    parts, pos = [], 0
    for t in find_times(text):
        parts.append(html.escape(text[pos:t.start], quote=False))
        parts.append(seek_link(t.seconds, text[t.start:t.end]))
        pos = t.end
    parts.append(html.escape(text[pos:], quote=False))
    return "".join(parts)
