"""Runner protocol and reports.

Protocol tests (when each question is asked, polls, history, preflight, the fidelity hook's wiring) use a
fake stream. The figures about what an answer saw (needle and retrieval recall, memory per tier, peaks) and
the accuracies come from real MemoryStreams on the tiny model with only the reply text scripted, and are
checked against values worked out by hand from the stream's geometry and the scripted replies.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import importlib.util
import json
import statistics
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from longwatch.app.cli import UserError
from longwatch.app.config import load_config
from longwatch.backbone.model import Sampling
from longwatch.eval.formats import load_bench
from longwatch.eval.report import write_report
from longwatch.eval.runner import FidelityUnavailable, Runner, RunOptions, VideosNotFound, fidelity_factory
from longwatch.ingest.patches import TemporalPatch
from longwatch.memory.retrieval import FaissIndex
from longwatch.memory.schema import ConfigError
from longwatch.memory.stream import MemoryStream


class FakeStream:
    """Keeps every patch; the answer used the last `window` blocks (or all, for policy 'full')."""

    def __init__(self, mem_cfg, stream_id, answer, asks):
        self.policy, self.answer, self.asks = mem_cfg.policy, answer, asks
        self.window = None if mem_cfg.policy == "full" else 2
        self.patches: list[TemporalPatch] = []
        self.closed = False

    def ingest(self, patch):
        self.patches.append(patch)

    def stats(self):
        n = len(self.patches) if self.window is None else min(len(self.patches), self.window)
        return {"policy": self.policy, "patches": len(self.patches), "t_last": self.patches[-1].t_end if self.patches else 0,
                "tiers": {"device": {"bytes": 1000 * n, "peak": 1000 * n, "budget": None, "blocks": n},
                          "host": {"bytes": 10 * len(self.patches), "peak": 10 * len(self.patches), "budget": None,
                                   "blocks": 0}}}

    def ask(self, question, on_text=None, keep_logits=False):
        self.asks.append((question, len(self.patches)))
        used = self.patches if self.window is None else self.patches[-self.window:]
        return SimpleNamespace(text=self.answer(question, self), token_ids=[1, 2], ttft_s=0.01 * len(self.patches),
                               prefill_s=0.005, decode_s=0.02, memory=self.stats(),
                               evidence=[SimpleNamespace(block_id=p.index, t_start=p.t_start, t_end=p.t_end,
                                                         reason="window", score=None) for p in used])

    def close(self):
        self.closed = True


def patches(duration: int):
    for i in range(duration):
        yield TemporalPatch(i, np.zeros((2, 32, 32, 3), np.uint8), (i, i + 0.5), float(i), float(i + 1))


def make_runner(durations: dict[str, int], answer, asks, fidelity=None) -> Runner:
    opener = lambda path: contextlib.nullcontext(patches(durations[Path(path).name]))  # noqa: E731
    factory = lambda mem_cfg, sid: FakeStream(mem_cfg, sid, answer, asks)  # noqa: E731
    return Runner(load_config(), factory, opener, fidelity)


SIZE = (64, 96)  # 2 x 3 merged vision tokens per patch on the tiny model


class ScriptedReplies:
    """A real MemoryStream on the tiny model whose reply text is scripted (its random weights answer nothing):
    evidence, memory and timings of each answer are the stream's own."""

    def __init__(self, stream: MemoryStream, reply):
        self.stream, self.reply = stream, reply
        self.policy = stream.cfg.policy

    def ingest(self, patch):
        self.stream.ingest(patch)

    def stats(self):
        return self.stream.stats()

    def ask(self, question, on_text=None, keep_logits=False):
        ans = self.stream.ask(question, on_text, keep_logits=keep_logits, sampling=Sampling(max_new_tokens=1))
        return dataclasses.replace(ans, text=self.reply(question, self))

    def close(self):
        self.stream.close()


def real_patches(duration: int):
    """1 s temporal patches of random frames: block i spans [i, i + 1), its frames at i and i + 0.5."""
    rng = np.random.default_rng(0)
    for i in range(duration):
        yield TemporalPatch(i, rng.integers(0, 256, (2, *SIZE, 3), dtype=np.uint8), (i, i + 0.5), float(i),
                            float(i + 1))


def real_runner(tiny, duration: int, reply, streams: list) -> Runner:
    """Runner over real streams: sink 1, window 2, no similarity retrieval (rekv gets only the blocks a
    question's time names), so what each answer saw follows from the ask time alone."""
    cfg = load_config()
    cfg = dataclasses.replace(cfg, memory=dataclasses.replace(cfg.memory, sink_blocks=1, window_blocks=2,
                                                              retrieve_blocks=0))

    def factory(mem_cfg, sid):
        streams.append(ScriptedReplies(MemoryStream(tiny, mem_cfg, stream_id=sid), reply))
        return streams[-1]

    return Runner(cfg, factory, lambda path: contextlib.nullcontext(real_patches(duration)))


def write_bench(tmp_path: Path, records: list, name: str = "b.json") -> Path:
    for r in records:
        (tmp_path / r["video_path"]).write_bytes(b"")
    p = tmp_path / name
    p.write_text(json.dumps(records))
    return p


def test_each_question_sees_exactly_the_patches_before_its_time(tmp_path):
    conv = [{"question": f"q at {t}", "answer": "x", "ask_time": t} for t in (0.5, 3.0, 3.2)]
    conv.append({"question": "q at end", "answer": "x"})
    path = write_bench(tmp_path, [{"video_id": "v", "video_path": "v.mp4", "conversations": conv}])
    asks: list = []
    result = make_runner({"v.mp4": 6}, lambda q, s: "x", asks).run([load_bench(path)], None,
                                                                   RunOptions(["full"], progress=False))
    # patches start at 0, 1, 2, ...: asked once every patch starting before the ask time is in
    assert [(q, n) for q, n in asks] == [("q at 0.5", 1), ("q at 3.0", 3), ("q at 3.2", 4), ("q at end", 6)]
    assert [r["t_stream_s"] for r in result.records] == [1.0, 3.0, 4.0, 6.0]
    assert all(r["score"] == 1.0 for r in result.records)
    assert [p["t"] for p in result.timeline] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


def gold_reply(bench):
    by_text = {}
    for q in bench.questions:
        by_text[q.question] = q.answer_letter if q.kind == "mc" else q.answer
    return lambda prompt, stream: next((a for t, a in by_text.items() if prompt.startswith(t)), "")


def test_recall_and_memory_are_those_of_the_blocks_the_real_answer_used(tmp_path, tiny):
    conv = [{"question": "Which shape was shown at 0:03?", "choices": ["red circle", "blue square"],
             "answer": "blue square", "ask_time": 8, "temporal_windows": [[2, 4]], "kind": "mc"},
            {"question": "What now?", "choices": ["x", "y"], "answer": "y", "ask_time": 3.5,
             "temporal_windows": [[2, 4]]}]
    path = write_bench(tmp_path, [{"video_id": "v", "video_path": "v.mp4", "conversations": conv}])
    bench = load_bench(path)
    result = real_runner(tiny, 10, gold_reply(bench), []).run(
        [bench], tmp_path, RunOptions(["full", "sliding", "rekv"], progress=False))
    recs = {(r["policy"], r["question"][:5]): r for r in result.records}
    assert len(recs) == len(result.records) == 3 * 2
    assert all(r["correct"] and r["gold"] == "B" for r in result.records)
    # "Which" is asked at 8 s, with blocks 0-7 streamed. The needle (2-4 s) is blocks 2 and 3 (midpoints
    # 2.5, 3.5). full used 0-8 s; sliding the sink (0-1 s) and window (6-8 s); rekv those plus the blocks
    # covering the time the question names, 0:03 +- 1 s: 2, 3 and 4 (2-5 s).
    late = {p: recs[(p, "Which")] for p in ("full", "sliding", "rekv")}
    assert {p: r["t_stream_s"] for p, r in late.items()} == {"full": 8.0, "sliding": 8.0, "rekv": 8.0}
    assert {p: r["needle_recall"] for p, r in late.items()} == {"full": 1.0, "sliding": 0.0, "rekv": 1.0}
    assert late["full"]["retrieval"] == pytest.approx({"recall": 1.0, "precision": 2 / 8, "f1": 0.4})
    assert late["sliding"]["retrieval"] == {"recall": 0.0, "precision": 0.0, "f1": 0.0}
    assert late["rekv"]["retrieval"] == pytest.approx({"recall": 1.0, "precision": 2 / 6, "f1": 0.5})
    assert late["rekv"]["evidence"] == [(0.0, 1.0), (2.0, 3.0), (3.0, 4.0), (4.0, 5.0), (6.0, 7.0), (7.0, 8.0)]
    # memory when asked: rekv has offloaded blocks 1-5 to host RAM (each block's K/V at fp32, plus its entry
    # in the retrieval index when that is faiss in host RAM); the others none
    d = tiny.dims
    faiss_here = importlib.util.find_spec("faiss") is not None  # index auto: faiss on the CPU, else torch
    entry = d.num_layers * (d.kv_heads * d.head_dim * 4 + FaissIndex.ENTRY_OVERHEAD) if faiss_here else 0
    block_bytes = [tiny.tokens_per_patch(SIZE, i + 0.25) * d.bytes_per_token + entry for i in range(10)]
    assert {p: r["memory"]["host"] for p, r in late.items()} == {"full": 0, "sliding": 0, "rekv": sum(block_bytes[1:6])}
    # "What now?" is asked at 3.5 s, blocks 0-3 streamed: every policy's window still holds the needle
    now = {p: recs[(p, "What ")] for p in ("full", "sliding", "rekv")}
    assert all(r["t_stream_s"] == 4.0 and r["needle_recall"] == 1.0 for r in now.values())
    assert now["full"]["retrieval"]["precision"] == pytest.approx(2 / 4)
    assert now["sliding"]["retrieval"]["precision"] == now["rekv"]["retrieval"]["precision"] == pytest.approx(2 / 3)
    assert now["rekv"]["memory"]["host"] == block_bytes[1]


def test_a_budget_that_cannot_run_fails_before_any_video_streams(tmp_path):
    path = write_bench(tmp_path, [{"video_id": f"v{i}", "video_path": f"v{i}.mp4",
                                   "conversations": [{"question": "q", "answer": "x"}]} for i in range(2)])
    asks: list = []
    runner = make_runner({"v0.mp4": 4, "v1.mp4": 4}, lambda q, s: "x", asks)
    checked: list = []

    def preflight(mem_cfg, video):
        checked.append((mem_cfg.policy, mem_cfg.device_budget, video.name))
        if mem_cfg.device_budget < 2**21:
            raise UserError(f"memory.device_budget {mem_cfg.device_budget} is too small")

    runner.preflight = preflight
    with pytest.raises(UserError, match="device_budget 1048576"):
        runner.run([load_bench(path)], tmp_path, RunOptions(["full", "rekv"], budgets=[2**22, 2**20], progress=False))
    assert asks == []  # the first combination (full at 4 MiB) would run; nothing did
    assert checked[:2] == [("full", 2**22, "v0.mp4"), ("full", 2**22, "v1.mp4")]


def test_budget_preflight_names_the_setting_and_the_minimum(tmp_path):
    import dataclasses

    from longwatch.app.schema import ConfigError
    from longwatch.eval.runner import budget_preflight

    from tests.ingest_fixtures import make_video
    from tests.memory_fakes import fake_backbone

    cfg = load_config()
    video = tmp_path / "v.mp4"
    make_video(video)
    check = budget_preflight(fake_backbone(), cfg)
    check(dataclasses.replace(cfg.memory, policy="rekv"), video)  # the default budget fits
    with pytest.raises(ConfigError, match="device_budget"):
        check(dataclasses.replace(cfg.memory, policy="rekv", device_budget=1000), video)


def test_proactive_polls_every_second_until_yes(tmp_path):
    entry = lambda gt: {"time": "[0:00:00 - 0:00:10]", "video_path": f"./videos/p{gt}.mp4", "questions": [  # noqa: E731
        {"task_type": "Proactive Output", "question": f"When light {gt} turns green, output \"GO\".",
         "time_stamp": "00:00:02", "ground_truth_time_stamp": f"00:00:{gt:02d}", "ground_truth_output": "GO"}]}
    (tmp_path / "videos").mkdir()
    path = write_bench(tmp_path, [entry(6), entry(40)])
    asks: list = []

    def reply(prompt, stream):  # light 6 turns green once 6 s are streamed; light 40 never (12 s video)
        if "right time" in prompt:
            return "yes" if "light 6 " in prompt and stream.patches[-1].t_end >= 6 else "no"
        return "GO"

    result = make_runner({"p6.mp4": 12, "p40.mp4": 12}, reply, asks).run([load_bench(path)], None,
                                                                         RunOptions(["full"], progress=False))
    on_time, never = result.records
    assert on_time["metrics"]["response_time_s"] == 6.0 and on_time["metrics"]["polls"] == 4  # polls at 3, 4, 5, 6
    assert on_time["correct"] and on_time["reply"] == "GO"
    assert not never["correct"] and never["metrics"]["time_correct"] == 0.0
    assert never["metrics"]["polls"] == 42  # 3 s .. 44 s: polls past the end of the stream are asked at its end


def test_sequential_questions_carry_earlier_answers(tmp_path):
    entries = [[{"time": "[0:00:00 - 0:00:10]", "video_path": "./s.mp4", "video_categories": "x", "questions": [
        {"task_type": "Sequential Question Answering", "question": f"Who now {k}?", "time_stamp": f"00:00:0{k}",
         "answer": "A", "options": ["Ann.", "Bob."]}]} for k in (1, 3)]]
    path = write_bench(tmp_path, [], "sqa.json")
    (tmp_path / "s.mp4").write_bytes(b"")
    path.write_text(json.dumps(entries))
    asks: list = []
    make_runner({"s.mp4": 5}, lambda q, s: "A", asks).run([load_bench(path)], None, RunOptions(["full"], progress=False))
    assert "Earlier questions" not in asks[0][0] and "Q: Who now 1?\nA: A" in asks[1][0]


def test_missing_videos_are_named(tmp_path):
    p = tmp_path / "b.json"
    p.write_text(json.dumps([{"video_id": "v", "video_path": "gone/v.mp4", "conversations": [
        {"question": "q", "answer": "a"}]}]))
    with pytest.raises(VideosNotFound, match=r"1 video\(s\) not found .* gone/v\.mp4"):
        make_runner({}, lambda q, s: "", []).run([load_bench(p)], tmp_path, RunOptions(["full"], progress=False))


def test_fidelity_hook_and_its_absence(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "longwatch.eval.fidelity", None)
    with pytest.raises(FidelityUnavailable, match="eval/fidelity.py is not available"):
        fidelity_factory(object(), load_config())
    probe = SimpleNamespace(ingest=lambda p: None, close=lambda: None,
                            measure=lambda prompt, ans: {"kl": 0.25, "top1": 1.0, "attn_recall": 0.5})
    path = write_bench(tmp_path, [{"video_id": "v", "video_path": "v.mp4", "conversations": [
        {"question": "q", "answer": "a", "ask_time": 2}]}])
    result = make_runner({"v.mp4": 3}, lambda q, s: "a", [], fidelity=lambda: probe).run(
        [load_bench(path)], None, RunOptions(["full"], fidelity=True, progress=False))
    assert result.records[0]["fidelity"] == {"kl": 0.25, "top1": 1.0, "attn_recall": 0.5}


REPLIES = {  # per policy, the scripted reply to Q2, Q5, Q9, Q-end (gold: A, "red circle", for all four)
    "full": ["A", "(A) red circle", "The answer is A.", "B"],              # 3 of 4 right
    "sliding": ["red circle", "B. blue square", "I cannot tell.", "A."],   # 2 of 4 right
}


def test_report_files(tmp_path, tiny):
    conv = [{"question": f"Q{k}", "choices": ["red circle", "blue square"], "answer": "red circle", "ask_time": k}
            for k in (2, 5, 9)] + [{"question": "Q-end", "choices": ["red circle", "blue square"],
                                    "answer": "red circle"}]
    path = write_bench(tmp_path, [{"video_id": "v", "video_path": "v.mp4", "conversations": conv}])
    order = [c["question"] for c in conv]
    reply = lambda q, s: REPLIES[s.policy][order.index(q.split("\n")[0])]  # noqa: E731
    streams: list = []
    result = real_runner(tiny, 10, reply, streams).run(
        [load_bench(path)], None, RunOptions(["full", "sliding"], budgets=[2**24, 2**25], progress=False))
    files = write_report(result, tmp_path / "out", {"model": "tiny", "default_budget": 2**30})
    run = json.loads(files["json"].read_text())
    summary = {(r["policy"], r["budget"]): r for r in run["summary"]}
    assert {k: r["accuracy"] for k, r in summary.items()} == {
        ("full", 2**24): 0.75, ("full", 2**25): 0.75, ("sliding", 2**24): 0.5, ("sliding", 2**25): 0.5}
    for (policy, budget), row in summary.items():
        recs = [r for r in result.records if r["policy"] == policy and r["budget"] == budget]
        assert [r["correct"] for r in recs] == [not r.startswith(("B", "I")) for r in REPLIES[policy]]
        assert row["ttft_p50_s"] == pytest.approx(statistics.median(r["ttft_s"] for r in recs))
        # the last question is asked after the last patch: its stream's own peak is the run's peak
        stream = next(s for s in streams if s.stream.cfg.policy == policy and s.stream.cfg.device_budget == budget)
        assert row["peak_device_bytes"] == stream.stats()["tiers"]["device"]["peak"] > 0
    md = files["markdown"].read_text()
    assert "| policy | budget | questions | accuracy |" in md and "| full | 16.0 MiB | 4 | 0.750 |" in md
    assert "| sliding | 32.0 MiB | 4 | 0.500 |" in md
    assert files["csv"].read_text().splitlines()[0].startswith("bench,format,policy,budget")
    assert len(files["memory"].read_text().splitlines()) == 1 + 4 * 10
    for name in ("plot_accuracy", "plot_ttft", "plot_memory"):
        assert files[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "plot_kl" not in files  # no fidelity measured, no KL plot
    small = write_report(result, tmp_path / "small", {"model": "tiny", "default_budget": 2**30}, plots=False,
                         compact=True)  # --compact: the same summary, the answers only in the gzipped CSV
    assert json.loads(small["json"].read_text()) == {k: v for k, v in run.items() if k != "records"}
    with gzip.open(small["csv"], "rt") as f:
        assert f.read() == files["csv"].read_text()
    with gzip.open(small["memory"], "rt") as f:
        assert f.read() == files["memory"].read_text()
    assert small["markdown"].read_text() == md and not (tmp_path / "small" / "questions.csv").exists()


def test_progress_names_each_run_and_video_on_stderr(tmp_path, capsys):
    conv = [{"question": "q", "answer": "x"}]
    path = write_bench(tmp_path, [{"video_id": v, "video_path": f"{v}.mp4", "conversations": conv} for v in "ab"])
    make_runner({"a.mp4": 2, "b.mp4": 3}, lambda q, s: "x", []).run(
        [load_bench(path)], None, RunOptions(["full", "sliding"], progress=True))
    captured = capsys.readouterr()
    assert captured.out == ""  # bars never touch stdout (--json, tables)
    for label in ("run 1/2 full: video 1/2", "run 1/2 full: video 2/2", "run 2/2 sliding: video 2/2"):
        assert label in captured.err
    assert "2/2 [" in captured.err  # each run's bar counts its questions


def test_choice_modes_pick_from_the_question_choices_and_the_report_says_so(tmp_path, tiny):
    conv = [{"question": "Which shape was shown at 0:03?", "choices": ["red circle", "blue square", "none"],
             "answer": "blue square", "ask_time": 5, "kind": "mc"},
            {"question": "How many flashes?", "answer": "2", "ask_time": 6}]
    path = write_bench(tmp_path, [{"video_id": "v", "video_path": "v.mp4", "conversations": conv}])
    bench = load_bench(path)
    cfg = load_config()
    opener = lambda p: contextlib.nullcontext(real_patches(8))  # noqa: E731
    streams: list = []

    def factory(mem_cfg, sid):
        streams.append(MemoryStream(tiny, mem_cfg, stream_id=sid))
        return streams[-1]

    for mode, picks in (("text", ["red circle", "blue square", "none"]), ("letter", ["A", "B", "C"])):
        result = Runner(cfg, factory, opener).run([bench], tmp_path, RunOptions(["full"], progress=False, choices=mode))
        mc, count = result.records
        assert mc["reply"] in picks and mc["answer_tokens"] >= 1
        probs = json.loads(mc["extra"]["choice_probs"])
        assert list(probs) == picks and max(probs, key=probs.get) == mc["reply"]
        assert mc["pred"] == "ABC"[picks.index(mc["reply"])] and mc["correct"] == (mc["pred"] == "B")
        assert "choice_probs" not in count["extra"]  # not multiple choice: generated as always
    files = write_report(result, tmp_path / "out", {"model": "tiny", "choices": "letter"}, plots=False)
    assert "picked from the choices' letters" in files["markdown"].read_text()
    with pytest.raises(ConfigError, match="choices: .best. is not one of generate, text, letter"):
        Runner(cfg, factory, opener).run([bench], tmp_path, RunOptions(["full"], progress=False, choices="best"))
