"""NeedleStream: a seeded synthetic streaming benchmark. This module plans needles and questions (no pixels).

Each video shows a drifting grey background with moving grey distractors and, at planned times, needles:
word signs, coloured shapes in a 3x3 grid, a yellow star that flashes several times (counting), a
sequence of three shapes (ordering), and hard negatives (decoy signs and shapes at other times, which
also appear as wrong choices). Questions: what was shown at a time, when a word appeared (a span),
how many flashes so far (asked several times), which came first, what is on screen now, and what was
shown at a time with no needle. Annotations are ReKV records plus `qid`, `kind`, `ask_time`,
`answer_span` and a per-video `needlestream` block; ReKV's stream loader can read them as they are.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

WORDS = ("KIWI", "LEMON", "PLUM", "MANGO", "PEAR", "FIG", "LIME", "APPLE", "GRAPE", "MELON", "PEACH", "DATE")
COLORS = {"red": (230, 40, 40), "green": (40, 190, 60), "blue": (40, 90, 235), "magenta": (220, 50, 220),
          "cyan": (40, 210, 220), "orange": (250, 140, 20)}
STAR_COLOR = (245, 225, 30)
SHAPES = ("circle", "square", "triangle")
CELLS = ("top left", "top center", "top right", "middle left", "center", "middle right",
         "bottom left", "bottom center", "bottom right")
NO_SIGN = "No sign was shown"


@dataclass(frozen=True)
class Preset:
    videos: int
    duration_s: tuple[float, float]
    size: tuple[int, int]
    """Written frame size (H, W); the eval's --frame-size decides what the model sees."""
    fps: int
    units_per_minute: float
    """Needle groups (target sign + decoy sign + target shape + decoy shape) per minute."""
    flashes: tuple[int, int]
    version: int = 1
    """NeedleStream version: 1 (the original renderer) or 2 (larger, bolder sign text that 16-pixel ViT
    patches of a 128x128 frame can read; train/held-out splits seeded apart, see `plan_video`)."""
    single: bool = False
    """One sign and nothing else that could be asked about: the time-free floor question."""


PRESETS = {
    "smoke": Preset(videos=2, duration_s=(24.0, 28.0), size=(224, 224), fps=8, units_per_minute=1.5, flashes=(3, 3)),
    "standard": Preset(videos=6, duration_s=(120.0, 240.0), size=(448, 448), fps=8, units_per_minute=1.0,
                       flashes=(3, 8)),
    "long": Preset(videos=3, duration_s=(1200.0, 1800.0), size=(448, 448), fps=4, units_per_minute=0.25,
                   flashes=(5, 12)),
    # Version 2, at the trained needle-tiny checkpoint's frame size (128x128).
    "tiny": Preset(videos=200, duration_s=(24.0, 40.0), size=(128, 128), fps=8, units_per_minute=1.5,
                   flashes=(2, 3), version=2),
    "tiny-single": Preset(videos=200, duration_s=(20.0, 60.0), size=(128, 128), fps=8, units_per_minute=0.0,
                          flashes=(0, 0), version=2, single=True),
}
SPLITS = {"heldout": 0, "train": 1}
"""Version-2 plans are seeded from (seed, index, split): a training video can never be a held-out one,
whatever seeds either side uses."""
SIGN_S, SHAPE_S, FLASH_S, SEQ_STEP_S, MIN_GAP_S = 2.0, 2.0, 1.0, 1.5, 0.5


@dataclass
class Needle:
    """One on-screen event, visible for t0 <= t < t1."""

    id: str
    kind: str  # sign | shape | star | sequence
    t0: float
    t1: float
    role: str = "target"  # target | decoy | count | order
    word: str | None = None
    color: str | None = None
    shape: str | None = None
    cell: int | None = None
    items: list[dict[str, str]] = field(default_factory=list)
    """sequence: [{color, shape}] shown one after another, SEQ_STEP_S each."""

    @property
    def label(self) -> str:
        if self.kind == "sign":
            return self.word or ""
        if self.kind == "shape":
            return f"{self.color} {self.shape}, {CELLS[self.cell or 0]}"
        return self.kind


@dataclass
class VideoPlan:
    video_id: str
    duration_s: float
    size: tuple[int, int]
    fps: int
    seed: int
    needles: list[Needle]
    questions: list[dict[str, Any]] = field(default_factory=list)
    motion_seed: int = 0
    version: int = 1
    split: str = "heldout"


def _events(rng: np.random.Generator, units: int, flashes: int) -> list[Needle]:
    words = list(rng.permutation(WORDS))
    events: list[Needle] = []
    for u in range(units):
        color = str(rng.choice(list(COLORS)))
        shape, dshape = (str(s) for s in rng.choice(SHAPES, 2, replace=False))
        cell, dcell = (int(c) for c in rng.choice(9, 2, replace=False))
        events += [
            Needle(f"sign{u}", "sign", 0, SIGN_S, word=words[(2 * u) % len(words)]),
            Needle(f"decoy_sign{u}", "sign", 0, SIGN_S, role="decoy", word=words[(2 * u + 1) % len(words)]),
            Needle(f"shape{u}", "shape", 0, SHAPE_S, color=color, shape=shape, cell=cell),
            # hard negative: same colour, other shape, other cell
            Needle(f"decoy_shape{u}", "shape", 0, SHAPE_S, role="decoy", color=color, shape=dshape, cell=dcell),
        ]
    events += [Needle(f"star{i}", "star", 0, FLASH_S, role="count") for i in range(flashes)]
    seq_colors = rng.choice(list(COLORS), 3, replace=False)
    items = [{"color": str(c), "shape": str(s)} for c, s in zip(seq_colors, rng.choice(SHAPES, 3))]
    events.append(Needle("sequence", "sequence", 0, 3 * SEQ_STEP_S, role="order", items=items))
    return events


def _place(rng: np.random.Generator, events: list[Needle], duration: float) -> list[Needle]:
    """Random order, random gaps (each >= MIN_GAP_S), all inside [1 s, duration - 1 s)."""
    order = rng.permutation(len(events))
    busy = sum(e.t1 - e.t0 for e in events)
    free = duration - 2.0 - busy - MIN_GAP_S * (len(events) - 1)
    if free < 0:
        raise ValueError(f"{len(events)} needles do not fit in {duration:.0f} s")
    gaps = rng.dirichlet(np.ones(len(events) + 1)) * free
    t, placed = 1.0 + gaps[0], []
    for k, i in enumerate(order):
        e = events[i]
        span = e.t1 - e.t0
        e.t0, e.t1 = round(float(t), 2), round(float(t + span), 2)
        placed.append(e)
        t = e.t1 + MIN_GAP_S + gaps[k + 1]
    return placed


def _mc(rng: np.random.Generator, right: str, wrong: list[str]) -> tuple[list[str], str]:
    choices = [right] + [w for w in dict.fromkeys(wrong) if w != right][:3]
    return [str(c) for c in rng.permutation(choices)], right


def _shape_label(color: str, shape: str, cell: int | None = None) -> str:
    return f"{color} {shape}" + ("" if cell is None else f", {CELLS[cell]}")


def _q(task: str, kind: str, question: str, answer: str, ask: float, windows: list[tuple[float, float]],
       **extra: Any) -> dict[str, Any]:
    start = min((w[0] for w in windows), default=ask)
    return {"task": task, "kind": kind, "question": question, "answer": answer, "ask_time": round(ask, 2),
            "start_time": round(min(start, ask), 2), "end_time": round(ask, 2),
            "temporal_windows": [[round(a, 2), round(b, 2)] for a, b in windows], **extra}


def _questions(rng: np.random.Generator, needles: list[Needle], duration: float) -> list[dict[str, Any]]:
    end = round(duration - 0.01, 2)
    later = lambda n: min(end, n.t1 + float(rng.uniform(2.0, 8.0)))  # noqa: E731 - asked after it is gone
    signs = [n for n in needles if n.kind == "sign"]
    targets = [n for n in signs if n.role == "target"]
    shapes = [n for n in needles if n.kind == "shape"]
    qs: list[dict[str, Any]] = []
    for s in targets:
        wrong = [d.word for d in signs if d is not s] + [NO_SIGN] + list(rng.permutation(WORDS))
        choices, ans = _mc(rng, s.word, wrong)
        t = (s.t0 + s.t1) / 2
        qs.append(_q("what_at", "mc", f"What word was shown on the sign at {t:.1f} seconds?", ans, later(s),
                     [(s.t0, s.t1)], choices=choices))
        qs.append(_q("when", "span", f"When was the word {s.word} shown on a sign? Answer with the start and end "
                     "time in seconds, like 12.0-14.5.", f"{s.t0:g}-{s.t1:g}", later(s), [(s.t0, s.t1)],
                     answer_span=[s.t0, s.t1]))
    s = targets[0]
    choices, ans = _mc(rng, s.word, [d.word for d in signs if d is not s] + [NO_SIGN] + list(rng.permutation(WORDS)))
    qs.append(_q("now", "mc", "What word is on the sign right now?", ans, s.t0 + 0.75 * (s.t1 - s.t0),
                 [(s.t0, s.t1)], choices=choices))
    for sh in (n for n in shapes if n.role == "target"):
        decoys = [_shape_label(d.color, d.shape, d.cell) for d in shapes if d is not sh]
        near = [_shape_label(sh.color, sh.shape, c) for c in rng.choice([c for c in range(9) if c != sh.cell], 2,
                                                                          replace=False)]
        choices, ans = _mc(rng, _shape_label(sh.color, sh.shape, sh.cell), decoys + near)
        qs.append(_q("what_at", "mc", f"Which coloured shape was shown in the 3x3 grid at {(sh.t0 + sh.t1) / 2:.1f} "
                     "seconds, and in which cell?", ans, later(sh), [(sh.t0, sh.t1)], choices=choices))
    stars = sorted((n for n in needles if n.kind == "star"), key=lambda n: n.t0)
    for t in _count_times(stars, end):
        seen = [st for st in stars if st.t0 < t]
        qs.append(_q("count", "count", "How many times has the yellow star flashed so far? Answer with a number.",
                     str(len(seen)), t, [(st.t0, min(st.t1, t)) for st in seen]))
    a, b = targets[0], next(n for n in shapes if n.role == "target")
    la, lb = f"the word {a.word}", f"the {_shape_label(b.color, b.shape)}"
    first = la if a.t0 < b.t0 else lb
    choices, ans = _mc(rng, first, [lb if first == la else la])
    qs.append(_q("first", "mc", f"Which appeared first: {la} or {lb}?", ans, end, [(a.t0, a.t1), (b.t0, b.t1)],
                 choices=choices))
    seq = next(n for n in needles if n.kind == "sequence")
    labels = [_shape_label(i["color"], i["shape"]) for i in seq.items]
    qs.append(_q("order", "order", f"Three shapes were shown one after another in the center: "
                 f"{', '.join(sorted(labels))}. In what order did they appear? Answer with the three names, "
                 "separated by commas.", ", ".join(labels), end, [(seq.t0, seq.t1)], labels=labels))
    qs.append(_empty_time_question(rng, needles, signs, end))
    return sorted(qs, key=lambda q: q["ask_time"])


def _count_times(stars: list[Needle], end: float) -> list[float]:
    """Before the first flash, mid-way and at the end; always >= 1 s from any flash onset, so the answer
    does not depend on whether the patch holding the ask time is already seen."""
    ok = [float(t) for t in np.arange(1.5, end, 0.25) if all(abs(t - s.t0) >= 1.0 for s in stars)]
    times = {end}
    before = [t for t in ok if t < stars[0].t0]
    mids = [t for t in ok if stars[0].t0 < t < stars[-1].t0]
    if before:
        times.add(before[-1])
    if mids:
        times.add(min(mids, key=lambda t: abs(t - stars[len(stars) // 2].t0)))
    return sorted(round(t, 2) for t in times)


def _empty_time_question(rng: np.random.Generator, needles: list[Needle], signs: list[Needle], end: float) -> dict:
    """A sign question about a moment more than 1 s away from any sign: the answer is NO_SIGN."""
    grid = np.arange(1.0, end - 1.0, 0.25)
    free = [t for t in grid if all(t < n.t0 - 1.0 or t > n.t1 + 1.0 for n in signs)]
    t = float(rng.choice(free))
    choices, ans = _mc(rng, NO_SIGN, [s.word for s in signs] + list(rng.permutation(WORDS)))
    return _q("no_needle", "mc", f"What word was shown on the sign at {t:.1f} seconds?", ans,
              min(end, t + float(rng.uniform(2.0, 6.0))), [], choices=choices, probe_time=t)


def _single_questions(rng: np.random.Generator, sign: Needle, duration: float) -> list[dict[str, Any]]:
    """The floor: one sign in the whole video, asked about at the end without a time."""
    choices, ans = _mc(rng, sign.word or "", [NO_SIGN] + list(rng.permutation(WORDS)))
    end = round(duration - 0.01, 2)
    return [_q("single", "mc", "What word was shown on the sign?", ans, end, [(sign.t0, sign.t1)], choices=choices)]


def plan_video(preset: Preset, seed: int, index: int, name: str = "needle", split: str = "heldout") -> VideoPlan:
    """Plan video `index` of a benchmark seeded `seed`; version-2 presets also seed from the split."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (choose from {', '.join(SPLITS)})")
    if preset.version == 1 and split != "heldout":
        raise ValueError("NeedleStream version 1 has no training split")
    rng = np.random.default_rng([seed, index] if preset.version == 1 else [seed, index, SPLITS[split]])
    duration = round(float(rng.uniform(*preset.duration_s)), 1)
    if preset.single:
        word = str(rng.choice(WORDS))
        needles = _place(rng, [Needle("sign0", "sign", 0, SIGN_S, word=word)], duration)
    else:
        units = max(1, round(preset.units_per_minute * duration / 60))
        flashes = int(rng.integers(preset.flashes[0], preset.flashes[1] + 1))
        needles = _place(rng, _events(rng, units, flashes), duration)
    plan = VideoPlan(f"{name}_{index:03d}", duration, preset.size, preset.fps, seed, needles,
                     motion_seed=int(rng.integers(2**31)), version=preset.version, split=split)
    plan.questions = _single_questions(rng, needles[0], duration) if preset.single else \
        _questions(rng, needles, duration)
    for i, q in enumerate(plan.questions):
        q["qid"] = f"{plan.video_id}/q{i}"
    return plan


def demo_plan() -> VideoPlan:
    """The demo's sample video: NeedleStream v2 at the needle-tiny frame size, needles at round times
    (the sign KIWI at 00:11-00:13, so "What word was on the sign at 00:12?" has an answer)."""
    needles = [Needle("shape0", "shape", 4.0, 6.0, color="red", shape="circle", cell=0),
               Needle("star0", "star", 8.0, 9.0, role="count"),
               Needle("sign0", "sign", 11.0, 13.0, word="KIWI"),
               Needle("star1", "star", 15.5, 16.5, role="count"),
               Needle("decoy_shape0", "shape", 18.5, 20.5, role="decoy", color="red", shape="square", cell=8),
               Needle("sequence", "sequence", 21.5, 26.0, role="order",
                      items=[{"color": "blue", "shape": "triangle"}, {"color": "green", "shape": "circle"},
                             {"color": "orange", "shape": "square"}]),
               Needle("decoy_sign0", "sign", 27.0, 29.0, role="decoy", word="LEMON"),
               Needle("star2", "star", 33.0, 34.0, role="count")]
    plan = VideoPlan("demo", 40.0, (128, 128), 8, 0, needles, motion_seed=7, version=2)
    plan.questions = _questions(np.random.default_rng(0), needles, plan.duration_s)
    return plan


def plan_bench(preset: str, seed: int) -> list[VideoPlan]:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    p = PRESETS[preset]
    return [plan_video(p, seed, i) for i in range(p.videos)]


def annotation(plan: VideoPlan, preset: str, video_path: str) -> dict[str, Any]:
    """The ReKV-superset record for one planned video."""
    return {"video_id": plan.video_id, "video_path": video_path, "duration": plan.duration_s,
            "needlestream": {"version": plan.version, "preset": preset, "seed": plan.seed, "split": plan.split,
                             "fps": plan.fps,
                             "size": list(plan.size), "needles": [asdict(n) for n in plan.needles]},
            "conversations": plan.questions}
