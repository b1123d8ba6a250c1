"""Training examples for the needle-tiny checkpoint: NeedleStream v2 videos rendered in memory, with every
question the benchmark asks plus per-patch captions, caption-text questions and yes/no "now" questions.

An example is what one teacher-forced forward sees: the video's patches exactly as the streaming
ingest would cut them (2 fps, two frames per patch, timestamps `<k.2 seconds>`), and many queries,
each with the number of patches visible when it is asked (`cut`; 0 = a text-only query). The queries
never see each other (a block mask in `eval/train.py`), so one forward teaches all of them.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from longwatch.backbone.inputs import caption_prompt, timestamp_text
from longwatch.eval.formats.prompts import format_prompt
from longwatch.eval.formats.rekv import load_rekv
from longwatch.eval.needlestream import (CELLS, COLORS, NO_SIGN, PRESETS, SHAPES, WORDS, Needle, VideoPlan,
                                         annotation, plan_video)
from longwatch.eval.needlestream_render import _background, render_frame
from longwatch.memory.answer import YES_NO

SAMPLE_FPS = 2.0
"""The checkpoint is trained, evaluated and demonstrated at the ingest default of 2 frames per second."""
NOTHING = "only grey shapes"


@dataclass
class Query:
    prompt: str
    answer: str
    cut: int
    """Patches visible when asked (the runner asks before ingesting the first patch starting after it)."""
    kind: str
    context: list[tuple[float, str]] | None = None
    """Caption-text queries: (time, caption) notes in place of the video."""
    first: int = 0
    """First visible patch: glimpses (`glimpse_example`) pack patches of many videos, each query sees its own."""


@dataclass
class Example:
    plan: VideoPlan
    frames: np.ndarray
    """uint8 [P, 2, H, W, 3]: the two frames of every patch."""
    times: list[tuple[float, float]]
    """(t_start, t_mid) per patch, as the ingest computes them."""
    captions: list[str]
    queries: list[Query] = field(default_factory=list)
    isolated: bool = False
    """Glimpses: every patch sees only the prompt prefix and itself (the patches come from different videos)."""


def sample_times(duration: float, fps: int) -> list[float]:
    """Frame times the 2 fps sampler keeps from a video of `duration` s written at `fps`."""
    last = (round(duration * fps) - 1) / fps
    return [i / SAMPLE_FPS for i in range(int(math.floor(last * SAMPLE_FPS + 1e-9)) + 1)]


def patch_frame_times(plan: VideoPlan) -> list[tuple[float, float]]:
    """The two frame times of every temporal patch the 2 fps ingest cuts from `plan`'s video."""
    ts = sample_times(plan.duration_s, plan.fps)
    return [(ts[i], ts[i + 1] if i + 1 < len(ts) else ts[i]) for i in range(0, len(ts), 2)]


def _visible(plan: VideoPlan, t: float) -> list[Needle]:
    return [n for n in plan.needles if n.t0 <= t < n.t1]


def _describe(n: Needle, t: float) -> str:
    if n.kind == "sign":
        return f"a sign that says {n.word}"
    if n.kind == "shape":
        return f"a {n.color} {n.shape}, {CELLS[n.cell or 0]}"
    if n.kind == "star":
        return "a yellow star"
    item = n.items[min(len(n.items) - 1, int((t - n.t0) // 1.5))]
    return f"a {item['color']} {item['shape']}, center"


def caption(plan: VideoPlan, frame_times: tuple[float, float]) -> str:
    """What a patch shows: each needle on screen in either of its frames, or NOTHING."""
    seen: list[str] = []
    for t in frame_times:
        for n in _visible(plan, t):
            d = _describe(n, t)
            if d not in seen:
                seen.append(d)
    return " and ".join(seen) if seen else NOTHING


def _clock(t: float) -> str:
    s = int(t)
    return f"{s // 60:02d}:{s % 60:02d}"


def _asked_at(t0: float, rng: np.random.Generator, spread: float = 0.99) -> str:
    """A time inside the second from `t0`, as a question names it: seconds with one decimal or mm:ss (half each).
    With the default spread, t0 + 0.95 and later print as the next second (see the drills' spread)."""
    t = t0 + float(rng.uniform(0.0, spread))
    return f"{t:.1f} seconds" if rng.random() < 0.5 else _clock(t)


def _when_answer(plan: VideoPlan, needle: Needle, patches: list[tuple[float, float]], mids: list[float]) -> str:
    """First and last timestamp of the patches showing `needle` (what the model can read off its input)."""
    hit = [m for (a, b), m in zip(patches, mids) if needle.t0 <= a < needle.t1 or needle.t0 <= b < needle.t1]
    return f"{timestamp_text(hit[0])[1:-9]}-{timestamp_text(hit[-1])[1:-9]}"


def build_example(preset: str, seed: int, index: int, split: str, rng: np.random.Generator,
                  extra: bool = True, render: bool = True) -> Example:
    """Render one video and its queries. `extra` adds the captions, caption-text and yes/no queries;
    `render=False` leaves the frames black (for collecting the vocabulary)."""
    plan = plan_video(PRESETS[preset], seed, index, name=f"{split}{seed}", split=split)
    pairs = patch_frame_times(plan)
    if render:
        bg = _background(plan)
        frames = np.stack([np.stack([render_frame(plan, a, bg), render_frame(plan, b, bg)]) for a, b in pairs])
    else:
        frames = np.zeros((len(pairs), 2, *plan.size, 3), np.uint8)
    mids = [(a + b) / 2 for a, b in pairs]
    ex = Example(plan, frames, [(a, m) for (a, _), m in zip(pairs, mids)], [caption(plan, p) for p in pairs])
    n = len(pairs)
    cut_at = lambda t: min(n, max(1, math.ceil(t - 1e-9)))  # noqa: E731 - patches with t_start < t
    bench = load_rekv([annotation(plan, preset, "x.mp4")], "train", "train")
    by_qid = {c["qid"]: c for c in plan.questions}
    for q in bench.videos[0].questions:
        conv = by_qid[q.qid]
        answer = q.answer or ""
        if q.task == "when":
            sign = next(s for s in plan.needles if s.kind == "sign" and s.word and s.word in q.question)
            answer = _when_answer(plan, sign, pairs, mids)
        ex.queries.append(Query(format_prompt(q), answer, cut_at(conv["ask_time"]), q.task))
    if extra:
        _extra_queries(ex, rng, cut_at)
    return ex


def _extra_queries(ex: Example, rng: np.random.Generator, cut_at) -> None:
    plan, n = ex.plan, len(ex.times)
    busy = [k for k, c in enumerate(ex.captions) if c != NOTHING]
    empty = [k for k, c in enumerate(ex.captions) if c == NOTHING]
    # dense time-grounded captions: mostly patches with a needle, some empty ones
    picks = list(rng.choice(busy, min(len(busy), 4), replace=False)) if busy else []
    picks += list(rng.choice(empty, 1, replace=False)) if empty else []
    for k in picks:
        ex.queries.append(Query(f"What was on screen at {_asked_at(ex.times[k][0], rng)}?", ex.captions[k], n,
                                "caption"))
    # sign words asked with a clock time and no choices (the demo's question)
    for s in (x for x in plan.needles if x.kind == "sign"):
        t = float(rng.uniform(s.t0, s.t1 - 0.01))
        k = int(t)
        if k < n and s.word in ex.captions[k]:
            ex.queries.append(Query(f"What word was on the sign at {_clock(t)}?", s.word or "", n, "what_at_clock"))
    if empty:
        t = ex.times[int(rng.choice(empty))][0] + float(rng.uniform(0.0, 0.99))
        if not any(s.t0 - 1 <= t <= s.t1 + 1 for s in plan.needles if s.kind == "sign"):
            ex.queries.append(Query(f"What word was on the sign at {_clock(t)}?", NO_SIGN, n, "what_at_clock"))
    # what is on screen now, and yes/no about it
    # Seeing comes before time-grounding: a short "now" caption after every patch (dense supervision of the
    # vision path; a first run with four per video had barely started to use the pixels after 900 steps).
    for k in range(n):
        ex.queries.append(Query("What is on screen now?", ex.captions[k], k + 1, "caption_now"))
    k = int(rng.choice(busy)) if busy and rng.random() < 0.7 else int(rng.integers(n))
    ex.queries.append(_yesno(ex, k, rng))
    # caption-text memory: notes with times instead of the video
    notes = [(ex.times[k][1], ex.captions[k]) for k in range(n) if ex.captions[k] != NOTHING]
    askable = [q for q in ex.queries if q.kind in ("what_at", "when", "no_needle", "first", "single")]
    if notes and askable and rng.random() < 0.5:  # long prompts: one per video, every other video
        q = askable[int(rng.integers(len(askable)))]
        ex.queries.append(Query(caption_prompt(notes, q.prompt), q.answer, 0, "text_" + q.kind, notes))


def shapes_in(cap: str) -> list[tuple[str, str]]:
    """(colour, shape) of every coloured shape a caption names."""
    return [(c, sh) for c in COLORS for sh in SHAPES if f"a {c} {sh}," in cap]


def single_shape(cap: str) -> tuple[str, str] | None:
    """(colour, shape) of a patch showing one coloured shape and nothing else, else None."""
    shown = shapes_in(cap)
    return shown[0] if len(shown) == 1 and " and " not in cap else None


def _yesno(ex: Example, k: int, rng: np.random.Generator) -> Query:
    cap = ex.captions[k]
    if rng.random() < 0.5 and cap != NOTHING and ("sign" in cap or "," in cap):
        part = cap.split(" and ")[int(rng.integers(len(cap.split(" and "))))]
        what = part.split(",")[0][2:] if "," in part else part[2:]
        q, a = (f"Is a {what} on screen?" if "sign" not in part else f"Is there {part} on screen?"), "Yes"
    else:
        shown = shapes_in(cap)
        if shown and rng.random() < 0.6:
            # a near miss of what is on screen: its colour with another shape, or its shape in another colour
            # (without these, "Is a red square on screen?" was answered Yes whenever anything red was shown)
            c, sh = shown[int(rng.integers(len(shown)))]
            if rng.random() < 0.5:
                sh = str(rng.choice([x for x in SHAPES if x != sh]))
            else:
                c = str(rng.choice([x for x in COLORS if x != c]))
            what = f"{c} {sh}"
            q = f"Is a {what} on screen?"
        elif rng.random() < 0.5:
            what = f"{rng.choice(list(COLORS))} {rng.choice(SHAPES)}"
            q = f"Is a {what} on screen?"
        else:
            what = f"a sign that says {rng.choice(WORDS)}"
            q = f"Is there {what} on screen?"
        a = "Yes" if what in cap else "No"
    return Query(q + YES_NO, a, k + 1, "yesno_now")


def glimpse_example(seed: int, step: int, rng: np.random.Generator, k: int = 16, split: str = "train") -> Example:
    """`k` single patches from `k` training videos packed into one sequence; each is seen only by its own
    "what is on screen now" caption and yes/no question. The warm-up phase of training: with one patch in
    view the answer can only come from its pixels, so the vision tower learns to see before the model
    learns to find a patch by its time."""
    frames, times, captions = [], [], []
    for j in range(k):
        preset = "tiny-single" if rng.random() < 0.2 else "tiny"
        plan = plan_video(PRESETS[preset], seed, 1_000_000 + step * k + j, name=f"{split}{seed}", split=split)
        pairs = patch_frame_times(plan)
        caps = [caption(plan, p) for p in pairs]
        busy = [i for i, c in enumerate(caps) if c != NOTHING]
        i = int(rng.choice(busy)) if busy and rng.random() < 0.8 else int(rng.integers(len(pairs)))
        bg = _background(plan)
        frames.append(np.stack([render_frame(plan, t, bg) for t in pairs[i]]))
        times.append((pairs[i][0], (pairs[i][0] + pairs[i][1]) / 2))
        captions.append(caps[i])
    ex = Example(plan, np.stack(frames), times, captions, isolated=True)
    for j in range(k):
        ex.queries.append(Query("What is on screen now?", captions[j], j + 1, "glimpse_caption", first=j))
        yn = _yesno(ex, j, rng)
        yn.first, yn.kind = j, "glimpse_yesno"
        ex.queries.append(yn)
    return ex


def _window(full: Example, rng: np.random.Generator) -> Example:
    """3 to 10 consecutive patches of `full`, with their real times and captions and no queries."""
    n = len(full.times)
    w = int(rng.integers(3, min(10, n) + 1))
    a = int(rng.integers(0, n - w + 1))
    return Example(full.plan, full.frames[a:a + w], full.times[a:a + w], full.captions[a:a + w])


def clip_example(seed: int, step: int, rng: np.random.Generator, split: str = "train") -> Example:
    """A few consecutive patches (3 to 10) of a training video with their real times, and for each patch a
    question about what was on screen at a time inside it (seconds or mm:ss), a "now" caption and the sign
    words by clock time: the second phase of training, where the model learns to find a patch by its
    timestamp while the context is still short."""
    preset = "tiny-single" if rng.random() < 0.2 else "tiny"
    ex = _window(build_example(preset, seed, 2_000_000 + step, split, rng, extra=False), rng)
    w = len(ex.times)
    for k in range(w):
        ex.queries.append(Query(f"What was on screen at {_asked_at(ex.times[k][0], rng)}?", ex.captions[k], w,
                                "clip_caption"))
        ex.queries.append(Query("What is on screen now?", ex.captions[k], k + 1, "clip_now"))
    for s in (x for x in ex.plan.needles if x.kind == "sign"):
        t = float(rng.uniform(s.t0, s.t1 - 0.01))
        k = next((i for i, (t0, _) in enumerate(ex.times) if t0 <= t < t0 + 1.0), None)
        if k is not None and s.word in ex.captions[k]:
            ex.queries.append(Query(f"What word was on the sign at {_clock(t)}?", s.word or "", w, "clip_word"))
    return ex


def watch_example(seed: int, step: int, rng: np.random.Generator, split: str = "train") -> Example:
    """A few consecutive patches (3 to 10) of a training video and, after every patch, yes/no questions about
    what is on screen in that newest patch: each shape shown in it (Yes), near misses of it (its colour with
    another shape, its shape in another colour), shapes shown earlier in the clip but gone now, other shapes
    and signs (No). What a watch asks after each patch of a live stream; the shipped model said Yes to any
    shape on screen, and kept saying it for patches after the shape had gone."""
    ex = _window(build_example("tiny", seed, 3_000_000 + step, split, rng, extra=False), rng)
    ask = lambda what, yes, k: ex.queries.append(Query(  # noqa: E731
        f"Is {what} on screen?{YES_NO}", "Yes" if yes else "No", k + 1, "watch_yesno"))
    for k, cap in enumerate(ex.captions):
        now = shapes_in(cap)
        before = {s for c in ex.captions[:k] for s in shapes_in(c)} - set(now)
        for c, sh in now:
            ask(f"a {c} {sh}", True, k)
            near = str(rng.choice([x for x in SHAPES if x != sh]))
            ask(f"a {c} {near}", (c, near) in now, k)
            other = str(rng.choice([x for x in COLORS if x != c]))
            ask(f"a {other} {sh}", (other, sh) in now, k)
        # two shapes in one patch (a sequence changing between its two frames): each colour with the other's
        # shape is not on screen; the fine-tuned model fired on "blue triangle" for a red triangle then a blue circle
        for (c, sh), (c2, sh2) in itertools.permutations(now, 2):
            if (c, sh2) not in now:
                ask(f"a {c} {sh2}", False, k)
        for c, sh in sorted(before)[:2]:
            ask(f"a {c} {sh}", False, k)
        c, sh = str(rng.choice(list(COLORS))), str(rng.choice(SHAPES))
        ask(f"a {c} {sh}", (c, sh) in now, k)
        words = [x.word for x in ex.plan.needles if x.kind == "sign" and f"says {x.word}" in cap]
        for word in words:
            ask(f"there a sign that says {word}", True, k)
        if words or rng.random() < 0.3:
            word = str(rng.choice(WORDS))
            ask(f"there a sign that says {word}", word in words, k)
    return ex


def shape_glimpse_example(seed: int, step: int, rng: np.random.Generator, k: int = 16,
                          split: str = "train") -> Example:
    """`k` single patches of `k` training videos, each showing a coloured shape and seen alone (as in
    `glimpse_example`), asked for its caption and whether it shows that shape (Yes), each other shape in
    its colour and its shape in another colour (No). The shipped model read a shape's colour at 1.00 and its
    shape at 0.55 (teacher-forced, chance 0.33), so a watch for a red circle fired on a red square."""
    frames, times, captions = [], [], []
    j = 0
    while len(frames) < k:
        plan = plan_video(PRESETS["tiny"], seed, 4_000_000 + step * 4 * k + j, name=f"{split}{seed}", split=split)
        j += 1
        pairs = patch_frame_times(plan)
        caps = [caption(plan, p) for p in pairs]
        shown = [i for i, c in enumerate(caps) if single_shape(c)]
        if not shown:
            continue
        i = int(rng.choice(shown))
        bg = _background(plan)
        frames.append(np.stack([render_frame(plan, t, bg) for t in pairs[i]]))
        times.append((pairs[i][0], (pairs[i][0] + pairs[i][1]) / 2))
        captions.append(caps[i])
    ex = Example(plan, np.stack(frames), times, captions, isolated=True)
    for j, cap in enumerate(captions):
        c, sh = single_shape(cap)
        ex.queries.append(Query("What is on screen now?", cap, j + 1, "glimpse_caption", first=j))
        asks = [(c, sh)] + [(c, x) for x in SHAPES if x != sh] + [(str(rng.choice([x for x in COLORS if x != c])), sh)]
        for cc, ss in asks:
            ex.queries.append(Query(f"Is a {cc} {ss} on screen?{YES_NO}",
                                    "Yes" if (cc, ss) == (c, sh) else "No", j + 1, "shape_yesno", first=j))
    return ex


def _made_up_caption(rng: np.random.Generator) -> str:
    if rng.random() < 0.3:
        return f"a sign that says {rng.choice(WORDS)}"
    return f"a {rng.choice(list(COLORS))} {rng.choice(SHAPES)}, {rng.choice(CELLS)}"


def drill_example(seed: int, step: int, rng: np.random.Generator, k: int = 16, split: str = "train") -> Example:
    """A clip with its questions (as `clip_example`) and `k` text-only lookups by time: each a list of 4-16
    notes at distinct whole seconds of a made-up minute, written as the stream writes a patch's time
    ("<12.2 seconds> a red circle, center"), asked what was seen at a time inside one note's second (in
    seconds or mm:ss). Finding a patch by the time in a question is needle-tiny's weak point (what-at 0.37,
    the same lookup in caption notes 0.0-0.17 held-out): one matching of the question's digits with a
    timestamp's, practised here on cheap text, is what a question about a video needs too."""
    ex = clip_example(seed, step, rng, split)
    for _ in range(k):
        seconds = sorted(int(s) for s in rng.choice(60, int(rng.integers(4, 17)), replace=False))
        notes = [(s + 0.25, _made_up_caption(rng)) for s in seconds]
        j = int(rng.integers(len(notes)))
        when = _asked_at(seconds[j], rng, spread=0.94)  # below .95: one decimal never rounds up to the next second
        ex.queries.append(Query(caption_prompt(notes, f"What was on screen at {when}?"), notes[j][1], 0, "drill",
                                notes))
    return ex
