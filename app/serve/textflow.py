"""From decoded text pieces to what a chat completion returns: reasoning split off, stop strings applied.

The same flow runs for streamed and whole answers, so both say exactly the same. Reasoning (the qwen3
parser, as vLLM's `--reasoning-parser qwen3`): everything before `</think>` is reasoning_content (a leading
`<think>` dropped: Thinking checkpoints' templates open the block in the prompt, so it may not be
generated; newlines right after it dropped), everything after is content (leading
newlines dropped); an answer cut off before `</think>` is all reasoning. Stop
strings apply to the content: it ends before the first one, which is not returned. Text that could still
turn into a marker or a stop string is held back until the next piece decides it.
"""

from __future__ import annotations

from dataclasses import dataclass

THINK_START = "<think>"
THINK_END = "</think>"


def _held(text: str, needles: list[str]) -> int:
    """How many trailing characters of `text` could start one of `needles` (and so must wait)."""
    best = 0
    for needle in needles:
        for n in range(min(len(needle) - 1, len(text)), best, -1):
            if text.endswith(needle[:n]):
                best = n
                break
    return best


@dataclass
class Piece:
    kind: str
    """reasoning | content"""
    text: str


class TextFlow:
    """feed() decoded pieces in order, then finish(); each returns the pieces ready to send."""

    def __init__(self, reasoning: bool, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.in_reasoning = reasoning
        self.stopped = False
        """A stop string was met: the caller should stop decoding."""
        self._buf = ""
        self._started = False  # reasoning: the leading <think> has been dealt with
        self._reasoning_started = False  # reasoning: leading newlines dropped
        self._content_started = False  # content: leading newlines after </think> dropped

    def feed(self, text: str) -> list[Piece]:
        if self.stopped:
            return []
        self._buf += text
        return self._drain(final=False)

    def finish(self) -> list[Piece]:
        if self.stopped:
            return []
        return self._drain(final=True)

    def _drain(self, final: bool) -> list[Piece]:
        out: list[Piece] = []
        if self.in_reasoning:
            if not self._started:
                head = self._buf.lstrip()
                if not final and len(head) < len(THINK_START) and THINK_START.startswith(head):
                    return out  # may still become <think>
                if head.startswith(THINK_START):
                    self._buf = head[len(THINK_START):]
                self._started = True
            if not self._reasoning_started:
                self._buf = self._buf.lstrip("\n")
                self._reasoning_started = bool(self._buf)
            end = self._buf.find(THINK_END)
            if end < 0:
                keep = 0 if final else _held(self._buf, [THINK_END])
                text, self._buf = self._buf[:len(self._buf) - keep], self._buf[len(self._buf) - keep:]
                if text:
                    out.append(Piece("reasoning", text))
                return out
            if end:
                out.append(Piece("reasoning", self._buf[:end]))
            self._buf = self._buf[end + len(THINK_END):]
            self.in_reasoning = False
        if not self._content_started:
            self._buf = self._buf.lstrip("\n")
            if not self._buf:
                return out
            self._content_started = True
        cut = min((i for i in (self._buf.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            text, self._buf = self._buf[:cut], ""
        else:
            keep = 0 if final else _held(self._buf, self.stops)
            text, self._buf = self._buf[:len(self._buf) - keep], self._buf[len(self._buf) - keep:]
        if text:
            out.append(Piece("content", text))
        return out


def join(pieces: list[Piece], kind: str) -> str | None:
    """The text of every piece of `kind`, or None when there is none (as OpenAI leaves the field out)."""
    parts = [p.text for p in pieces if p.kind == kind]
    return "".join(parts) if parts else None
