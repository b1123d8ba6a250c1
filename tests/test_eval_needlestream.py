"""NeedleStream: seeded plans, annotations that load, and videos that really show each needle at its time."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from longwatch.app.cli import main
from longwatch.eval.formats import load_bench
from longwatch.eval.needlestream import COLORS, NO_SIGN, STAR_COLOR, WORDS, Needle, plan_bench
from longwatch.eval.needlestream_render import cell_center, draw_needle, make_bench


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("needle")
    path = make_bench("smoke", 3, out, progress=False)
    return path, json.loads(path.read_text())


def frames_of(path) -> tuple[list[np.ndarray], float]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return [f.to_ndarray(format="rgb24") for f in c.decode(s)], float(s.average_rate)


def near(pixel: np.ndarray, rgb: tuple[int, int, int], tol: int = 45) -> bool:
    return bool(np.abs(pixel.astype(int) - np.array(rgb)).max() <= tol)


def saturated(frame: np.ndarray) -> float:
    """Share of strongly coloured pixels (grey background and distractors have none)."""
    f = frame.astype(int)
    return float(((f.max(axis=2) - f.min(axis=2)) > 80).mean())


def _sign_distance(band: np.ndarray, word: str) -> float:
    """Mean abs difference between a decoded sign and the sign drawn with `word` (reads the word back)."""
    img = np.zeros((224, 224, 3), np.uint8)
    draw_needle(img, Needle("x", "sign", 0, 1, word=word), 0.5)
    return float(np.abs(img[95:130, 40:184].astype(int) - band.astype(int)).mean())


def test_same_seed_same_plan_other_seed_differs():
    a, b, c = plan_bench("smoke", 7), plan_bench("smoke", 7), plan_bench("smoke", 8)
    assert [p.questions for p in a] == [p.questions for p in b]
    assert [p.questions for p in a] != [p.questions for p in c]


@pytest.mark.parametrize("preset", ["smoke", "standard", "long"])
def test_plans_are_well_formed(preset):
    for plan in plan_bench(preset, 0)[:2]:
        spans = sorted((n.t0, n.t1) for n in plan.needles)
        assert all(b[0] - a[1] >= 0.49 for a, b in zip(spans, spans[1:])), "needles overlap"
        assert spans[0][0] >= 1.0 and spans[-1][1] <= plan.duration_s - 0.99
        tasks = {q["task"] for q in plan.questions}
        assert tasks == {"what_at", "when", "now", "count", "first", "order", "no_needle"}
        stars = [n for n in plan.needles if n.kind == "star"]
        for qq in plan.questions:
            assert 0 < qq["ask_time"] <= plan.duration_s
            if qq["kind"] == "mc":
                assert qq["answer"] in qq["choices"] and len(set(qq["choices"])) == len(qq["choices"])
            if qq["task"] == "count":  # gold = flashes begun before the ask time, none within 1 s of it
                assert int(qq["answer"]) == sum(s.t0 < qq["ask_time"] for s in stars)
                assert all(abs(s.t0 - qq["ask_time"]) >= 1.0 for s in stars)
            if qq["task"] == "now":
                sign = next(n for n in plan.needles if n.word == qq["answer"])
                assert sign.t0 < qq["ask_time"] < sign.t1
            if qq["task"] in ("what_at", "when", "first", "order", "count"):
                assert qq["ask_time"] >= max([w[1] for w in qq["temporal_windows"]], default=0) - 1e-6


def test_smoke_is_small_and_loads_as_needlestream(smoke):
    path, records = smoke
    bench = load_bench(path)
    assert bench.format == "needlestream" and len(bench.videos) == 2
    assert sum(r["duration"] for r in records) <= 80 and 8 <= len(bench.questions) <= 24
    assert all(r["needlestream"]["size"] == [224, 224] for r in records)
    span = next(q for q in bench.questions if q.kind == "span")
    assert span.evidence_windows == (tuple(span.extra["answer_span"]),)
    assert {q.kind for q in bench.questions} == {"mc", "span", "count", "order"}


def test_video_shows_needles_at_their_annotated_times(smoke):
    path, records = smoke
    for rec in records:
        frames, fps = frames_of(path.parent / rec["video_path"])
        assert len(frames) == round(rec["duration"] * fps) and frames[0].shape == (224, 224, 3)
        at = lambda t: frames[int(round(t * fps))]  # noqa: E731
        for n in rec["needlestream"]["needles"]:
            mid = at((n["t0"] + n["t1"]) / 2)
            if n["kind"] == "shape":
                x, y = cell_center(n["cell"], (224, 224))
                assert near(mid[y, x], COLORS[n["color"]]), (n, mid[y, x])
                assert not near(at(n["t0"] - 0.4)[y, x], COLORS[n["color"]])  # not there before
            elif n["kind"] == "sign":
                band = mid[95:130, 40:184]
                assert (band > 235).all(axis=2).mean() > 0.35 and (band < 60).all(axis=2).mean() > 0.05
                others = [w for w in WORDS if w != n["word"]]
                assert _sign_distance(band, n["word"]) < min(_sign_distance(band, w) for w in others)
            elif n["kind"] == "star":
                assert near(mid[112, 112], STAR_COLOR)
            elif n["kind"] == "sequence":
                for k, item in enumerate(n["items"]):
                    assert near(at(n["t0"] + 1.5 * k + 0.75)[112, 112], COLORS[item["color"]])


def test_flash_count_and_empty_moment_match_the_annotations(smoke):
    path, records = smoke
    rec = records[0]
    frames, fps = frames_of(path.parent / rec["video_path"])
    star_on = [near(f[112, 112], STAR_COLOR) for f in frames]
    onsets = [i / fps for i in range(1, len(frames)) if star_on[i] and not star_on[i - 1]]
    stars = sorted(n["t0"] for n in rec["needlestream"]["needles"] if n["kind"] == "star")
    assert len(onsets) == len(stars) and np.allclose(onsets, stars, atol=1.5 / fps)
    for c in (c for c in rec["conversations"] if c["task"] == "count"):
        assert int(c["answer"]) == sum(t < c["ask_time"] for t in onsets)
    empty = next(c for c in rec["conversations"] if c["task"] == "no_needle")
    assert empty["answer"] == NO_SIGN
    frame = frames[int(round(empty["probe_time"] * fps))]
    assert (frame[95:130, 40:184] > 235).all(axis=2).mean() < 0.2  # no white sign on screen


def test_make_bench_command(tmp_path, capsys):
    assert main(["make-bench", "--preset", "smoke", "--seed", "1", "--out", str(tmp_path), "--json",
                 "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["videos"] == 2 and summary["questions"] == len(load_bench(tmp_path / "annotations.json").questions)
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == ["needle_000.mp4", "needle_001.mp4"]
