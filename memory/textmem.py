"""Text memory (StreamChat): the stream's captions as timed notes, merged into events, retrieved by embedding.

The decision logic only (no model): `TextMemory` holds notes (an event: consecutive captions alike enough to
merge, with its time range), keeps their bytes inside a budget (oldest notes leave first), picks the notes a
question needs (every note covering a time it names, then the nearest by embedding), and journals them to a
folder so a saved stream answers the same. `memory/captions.py` writes the captions and asks with the notes.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from longwatch.memory.blockfiles import append_record, read_records, replace_records

log = logging.getLogger(__name__)

NOTE_OVERHEAD = 128
"""Bytes a note costs besides its text and embedding (times, counters, the Python objects), counted against
the budget so that many short notes cannot pass it."""

NOTES_FILE = "notes.jsonl"

Embed = Callable[[list[str]], torch.Tensor]
"""texts -> [n, dim] float32 rows of unit norm."""


@dataclass
class Note:
    """One event: captions in a row that merged, the first caption's text, the times they were written at."""

    id: int
    t_start: float
    t_end: float
    text: str
    emb: torch.Tensor
    """[dim] float32, unit norm: the embedding of `text`."""
    stamps: list[float] = field(default_factory=list)
    """Stream times of its first and (if it merged more than one caption) last caption: the note's lines."""
    captions: int = 1

    @property
    def nbytes(self) -> int:
        return len(self.text.encode()) + self.emb.numel() * 4 + NOTE_OVERHEAD

    def lines(self) -> list[tuple[float, str]]:
        """(time, text) lines for a prompt: the first caption, and the last when the event lasted longer."""
        return [(t, self.text) for t in self.stamps]

    def covers(self, t0: float, t1: float) -> bool:
        return self.t_start <= t1 and t0 < self.t_end

    def as_dict(self) -> dict:
        return {"id": self.id, "t_start": self.t_start, "t_end": self.t_end, "text": self.text,
                "stamps": self.stamps, "captions": self.captions,
                "emb": base64.b64encode(self.emb.float().numpy().tobytes()).decode()}

    @classmethod
    def from_dict(cls, d: dict) -> Note:
        emb = torch.frombuffer(bytearray(base64.b64decode(d["emb"])), dtype=torch.float32)
        return cls(int(d["id"]), float(d["t_start"]), float(d["t_end"]), str(d["text"]), emb,
                   [float(t) for t in d["stamps"]], int(d["captions"]))


@dataclass(frozen=True)
class Picked:
    note: Note
    reason: str
    """'time' (covers a time the question names) or 'retrieved' (nearest by embedding)."""
    score: float | None = None


class TextMemory:
    """Notes under a byte budget; see the module docstring.

    `merge_similarity`: a caption joins the newest note when the cosine of their embeddings is at least this
    (equal texts always merge). A note that would not fit evicts the oldest first; one larger than the
    whole budget is refused (ValueError), since it could never be kept.
    """

    def __init__(self, budget: int, merge_similarity: float, embedder_name: str, folder: str | None = None) -> None:
        self.budget, self.merge_similarity, self.embedder_name = budget, merge_similarity, embedder_name
        self.notes: list[Note] = []
        self.bytes = self.peak = self.dropped = self.captions = 0
        self._next_id = 0
        self._path = Path(folder) / NOTES_FILE if folder else None

    def add(self, t_start: float, t_end: float, stamp: float, text: str, emb: torch.Tensor, merge: bool = True) -> Note:
        """A caption of the stream over [t_start, t_end), written at `stamp`: merged into the newest note (unless
        `merge` is False: something came between them) or a new one."""
        text = " ".join(text.split())
        if not text:
            raise ValueError("empty caption")
        emb = emb.detach().float().cpu().reshape(-1)
        self.captions += 1
        last = self.notes[-1] if self.notes else None
        if merge and last is not None and (last.text == text or float(last.emb @ emb) >= self.merge_similarity):
            last.t_end = max(last.t_end, t_end)
            last.stamps = [last.stamps[0], stamp]
            last.captions += 1
            self._write({"op": "put", "note": last.as_dict()})
            return last
        note = Note(self._next_id, t_start, t_end, text, emb, [stamp])
        if note.nbytes > self.budget:
            raise ValueError(f"a note of {note.nbytes} bytes cannot fit the text memory's budget of {self.budget}")
        while self.notes and self.bytes + note.nbytes > self.budget:
            old = self.notes.pop(0)
            self.bytes -= old.nbytes
            self.dropped += 1
            self._write({"op": "drop", "id": old.id})
        self._next_id += 1
        self.notes.append(note)
        self.bytes += note.nbytes
        self.peak = max(self.peak, self.bytes)
        self._write({"op": "put", "note": note.as_dict()})
        return note

    def pick(self, query: torch.Tensor | None, k: int, ranges: list[tuple[float, float]], time_k: int,
             until: float | None = None) -> list[Picked]:
        """Notes for a question: those covering a named range (at most `time_k`, earliest first), then the `k`
        nearest to `query` ([dim]; None: no similarity picks). `until` hides notes starting at or after it."""
        seen = [n for n in self.notes if until is None or n.t_start < until]
        forced: list[Picked] = []
        for t0, t1 in ranges:
            forced += [Picked(n, "time") for n in seen if n.covers(t0, t1) and all(p.note is not n for p in forced)]
        forced = forced[:time_k]
        rest = [n for n in seen if all(p.note is not n for p in forced)]
        picked = list(forced)
        if query is not None and k > 0 and rest:
            sims = torch.stack([n.emb for n in rest]) @ query.float().reshape(-1)
            top = torch.topk(sims, min(k, len(rest)))
            picked += [Picked(rest[i], "retrieved", float(s)) for s, i in zip(top.values, top.indices.tolist())]
        return picked

    def stats(self) -> dict:
        return {"notes": len(self.notes), "captions": self.captions, "bytes": self.bytes, "peak": self.peak,
                "budget": self.budget, "dropped": self.dropped, "embedder": self.embedder_name}

    def _write(self, record: dict) -> None:
        if self._path is None:
            return
        if not self._path.exists():
            self._path.parent.mkdir(parents=True, exist_ok=True)
            append_record(self._path, {"op": "open", "embedder": self.embedder_name})
        append_record(self._path, record)

    def save(self, folder: str) -> None:
        """Write every note to `folder`/notes.jsonl (beside it first, then swapped in atomically)."""
        replace_records(Path(folder) / NOTES_FILE, [{"op": "open", "embedder": self.embedder_name}]
                        + [{"op": "put", "note": n.as_dict()} for n in self.notes])

    def load(self, folder: str, embed: Embed) -> None:
        """Replay `folder`/notes.jsonl (a torn last line, from a crash mid-write, is skipped); notes embedded by
        another embedder than this memory's are embedded again with `embed`."""
        path = Path(folder) / NOTES_FILE
        if not path.is_file():
            return
        notes: dict[int, Note] = {}
        saved_with = self.embedder_name
        for r in read_records(path):
            if r.get("op") == "open":
                saved_with = r.get("embedder", saved_with)
            elif r.get("op") == "put":
                note = Note.from_dict(r["note"])
                notes[note.id] = note
            elif r.get("op") == "drop":
                notes.pop(int(r["id"]), None)
        self.notes = [notes[i] for i in sorted(notes)]
        if saved_with != self.embedder_name and self.notes:
            log.info("%s: notes embedded with %s, this stream embeds with %s: embedding %d notes again", path,
                     saved_with, self.embedder_name, len(self.notes))
            for note, emb in zip(self.notes, embed([n.text for n in self.notes])):
                note.emb = emb.float().cpu()
        self.bytes = sum(n.nbytes for n in self.notes)
        while self.notes and self.bytes > self.budget:  # saved under a larger budget: the oldest leave
            self.bytes -= self.notes.pop(0).nbytes
            self.dropped += 1
        self.peak = max(self.peak, self.bytes)
        self.captions = sum(n.captions for n in self.notes)
        self._next_id = max(notes, default=-1) + 1
