"""lmms-eval adapter: each video streams once, gen_kwargs and qwen3_vl's model_args are honoured, ranks split the
work, and lmms-eval's own CLI answers a two-question task built from a NeedleStream video."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from longwatch.backbone.config import Sampling
from longwatch.eval.lmms_adapter import capped_fps, config_overrides, cut, group_by_video, sampling_for, video_of

needs_lmms = pytest.mark.skipif(importlib.util.find_spec("lmms_eval") is None,
                                reason="lmms-eval not installed (pip install --no-deps -r .ci/lmms-eval.txt)")
BIN = Path(sys.executable).parent


def test_helpers_without_lmms_eval():
    assert "lmms_eval" not in sys.modules  # importing the adapter does not import lmms-eval
    assert video_of(["/d/a.mp4"]) == "/d/a.mp4" and video_of([object(), "b.MKV"]) == "b.MKV" and video_of([]) is None
    assert cut("B.\nBecause", ["\n", "."]) == "B"
    assert group_by_video([("q1", "a"), ("q2", "b"), ("q3", "a"), ("q4", None)]) == {"a": [0, 2], "b": [1], None: [3]}
    assert config_overrides({"model": "tiny", "policy": "rekv", "batch_size": 1, "memory.window_blocks": 4}) == {
        "model.name": "tiny", "memory.policy": "rekv", "memory.window_blocks": 4}
    with pytest.raises(ValueError, match="unknown model_arg 'colour'"):
        config_overrides({"colour": "red"})


def test_qwen3_vl_model_args_map_to_the_config():
    """The names lmms-eval's own qwen3_vl model takes, so a user's --model_args carry over."""
    assert config_overrides({"pretrained": "Qwen/Qwen3-VL-2B-Instruct", "max_pixels": 200704, "min_pixels": 50176,
                             "fps": 1.0, "attn_implementation": "sdpa", "max_num_frames": 64,
                             "system_prompt": "Be brief.", "device_map": "auto"}) == {
        "model.name": "Qwen/Qwen3-VL-2B-Instruct", "ingest.max_pixels": 200704, "ingest.min_pixels": 50176,
        "ingest.fps": 1.0, "model.attn": "sdpa"}
    # max_num_frames lowers the rate for long videos, never raises it
    assert capped_fps(2.0, 3600.0, 64) == pytest.approx(64 / 3600)
    assert capped_fps(2.0, 20.0, 64) == 2.0 and capped_fps(2.0, 3600.0, None) == 2.0 and capped_fps(2.0, None, 8) == 2.0


def test_gen_kwargs_decide_length_and_sampling():
    base = Sampling(max_new_tokens=64, seed=3)
    assert sampling_for({}, base) == Sampling(max_new_tokens=64, seed=3)
    assert sampling_for({"max_new_tokens": 16, "temperature": 0, "until": ["\n"]}, base) == \
        Sampling(max_new_tokens=16, seed=3)
    hot = sampling_for({"max_new_tokens": 8, "temperature": 0.7, "top_p": 0.9, "top_k": 20}, base)
    assert (hot.temperature, hot.top_p, hot.top_k, hot.max_new_tokens, hot.seed) == (0.7, 0.9, 20, 8, 3)
    assert sampling_for({"temperature": 0.7, "do_sample": False}, base).temperature == 0.0
    with pytest.raises(ValueError, match="num_beams"):
        sampling_for({"num_beams": 4}, base)


@needs_lmms
def test_ranks_share_the_documents_exactly_once():
    """lmms-eval shards documents by the model's rank/world_size (build_all_requests -> create_iterator)."""
    from lmms_eval.utils import create_iterator

    shards = [[i for i, _ in create_iterator(enumerate("abcde"), rank=r, world_size=2)] for r in (0, 1)]
    assert sorted(shards[0] + shards[1]) == [0, 1, 2, 3, 4] and all(shards)


@needs_lmms
def test_each_video_streams_once_and_replies_keep_request_order():
    from lmms_eval.api.instance import Instance

    import longwatch.eval.lmms_adapter as adapter

    adapter.register()
    from lmms_eval.models import get_model

    cls = get_model("longwatch")
    assert cls is adapter.LongwatchLMM
    opened, asked = [], []

    class Stream:
        def __init__(self, cfg, sid):
            self.n = 0

        def ingest(self, patch):
            self.n += 1

        def ask(self, q, sampling=None, **kw):
            asked.append((q, sampling.max_new_tokens, sampling.temperature))
            return SimpleNamespace(text=f"{q} after {self.n} patches.\nmore")

        def close(self):
            pass

    def open_patches(path):
        opened.append(path)
        return contextlib.nullcontext(range({"a.mp4": 3, "b.mp4": 5}[path]))

    model = cls(model="tiny", policy="sliding", stream_factory=Stream, open_patches=open_patches)
    assert model.cfg.memory.policy == "sliding" and (model.rank, model.world_size) == (0, 1)
    docs = [{"v": "a.mp4"}, {"v": "b.mp4"}, {"v": "a.mp4"}]
    model.task_dict = {"t": {"test": docs}}
    gen = [{"until": ["\n"]}, {"until": "\n", "max_new_tokens": 5}, {"until": ["\n"], "temperature": 0.5}]
    reqs = [Instance("generate_until", (f"<image>Q{i}", gen[i], lambda d: [d["v"]], i, "t", "test"), i,
                     {"task": "t", "doc_id": i, "repeats": 1}) for i in range(3)]
    assert model.generate_until(reqs) == ["Q0 after 3 patches.", "Q1 after 5 patches.", "Q2 after 3 patches."]
    assert opened == ["a.mp4", "b.mp4"]
    assert asked == [("Q0", model.cfg.model.max_new_tokens, 0.0), ("Q2", model.cfg.model.max_new_tokens, 0.5),
                     ("Q1", 5, 0.0)]
    with pytest.raises(NotImplementedError):
        model.loglikelihood(reqs)


TASK_YAML = """\
task: needle_lmms
dataset_path: json
dataset_kwargs:
  data_files:
    test: {docs}
test_split: test
output_type: generate_until
doc_to_visual: !function needle_utils.doc_to_visual
doc_to_text: !function needle_utils.doc_to_text
doc_to_target: answer
process_results: !function needle_utils.process_results
generation_kwargs:
  max_new_tokens: 8
  temperature: 0
  until: ["\\n"]
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""

TASK_UTILS = '''\
def doc_to_visual(doc):
    return [doc["video"]]


def doc_to_text(doc):
    return doc["question"]


def process_results(doc, results):
    reply = results[0].strip()
    return {"acc": float(reply.upper().startswith(doc["answer"]) or reply == doc["option"])}
'''


@pytest.fixture(scope="module")
def needle_task(tmp_path_factory) -> Path:
    """An lmms-eval task folder (--include_path): two questions about one NeedleStream video, a local json."""
    from longwatch.eval.formats import load_bench
    from longwatch.eval.formats.prompts import format_prompt
    from longwatch.eval.needlestream_render import make_bench

    root = tmp_path_factory.mktemp("lmms")
    video = load_bench(make_bench("tiny", 1, root / "bench", progress=False, videos=1)).videos[0]
    picked = [q for q in video.questions if q.task in ("what_at", "no_needle") and "word" in q.question][:2]
    docs = [{"video": str(root / "bench" / video.video_path), "question": format_prompt(q),
             "answer": q.answer_letter, "option": q.answer} for q in picked]
    assert len(docs) == 2
    (root / "docs.json").write_text(json.dumps(docs))
    (root / "task").mkdir()
    (root / "task" / "needle_lmms.yaml").write_text(TASK_YAML.format(docs=root / "docs.json"))
    (root / "task" / "needle_utils.py").write_text(TASK_UTILS)
    return root


@needs_lmms
def test_max_num_frames_caps_the_frames_of_a_long_video(needle_task):
    """32 s at the config's 2 fps is 64 frames; max_num_frames=8 samples 8 of them (4 temporal patches)."""
    import longwatch.eval.lmms_adapter as adapter

    video = json.loads((needle_task / "docs.json").read_text())[0]["video"]
    model = adapter.LongwatchLMM(model="tiny", frame_size=128, max_num_frames=8, stream_factory=lambda *a: None)
    with model.open_patches(video) as patches:
        frames = sum(len(p.frames) for p in patches)
    assert 6 <= frames <= 8


def _lmms_eval(launcher: list[str], root: Path, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "LONGWATCH_CACHE": str(root / "cache")}
    args = ["--model", "longwatch", "--model_args", "pretrained=needle-tiny,frame_size=128,max_num_frames=16",
            "--tasks", "needle_lmms", "--include_path", str(root / "task"), "--limit", "2",
            "--output_path", str(out), "--log_samples"]
    return subprocess.run([*launcher, *args], env=env, capture_output=True, text=True, timeout=240)


def _written(out: Path) -> tuple[dict, list[dict]]:
    results = json.loads(next(out.rglob("*_results.json")).read_text())
    samples = [json.loads(line) for line in next(out.rglob("*_samples_needle_lmms.jsonl")).read_text().splitlines()]
    return results, samples


@needs_lmms
@pytest.mark.slow  # ~27 s, lmms-eval's own CLI in a subprocess; the adapter's requests and replies are tested in process above
def test_lmms_eval_cli_answers_a_needlestream_task(needle_task):
    """`lmms-eval eval --model longwatch` as its users run it, offline, on a local two-document task."""
    out = needle_task / "out1"
    run = _lmms_eval([str(BIN / "lmms-eval"), "eval"], needle_task, out)
    assert run.returncode == 0, run.stderr[-3000:]
    results, samples = _written(out)
    assert "acc,none" in results["results"]["needle_lmms"]
    assert sorted(s["doc_id"] for s in samples) == [0, 1]
    assert all(s["filtered_resps"].strip() for s in samples), samples  # two answers, cut at "\n"
    assert "longwatch rank 0/1: 2 request(s)" in run.stdout + run.stderr  # lmms-eval's log (loguru)


@needs_lmms
@pytest.mark.slow
def test_two_cpu_processes_each_answer_half(needle_task):
    """torchrun with two CPU processes: each rank answers one of the two questions; rank 0 writes both."""
    out = needle_task / "out2"
    run = _lmms_eval([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "lmms_eval"],
                     needle_task, out)
    assert run.returncode == 0, run.stderr[-3000:]
    log = run.stdout + run.stderr
    assert "longwatch rank 0/2: 1 request(s)" in log and "longwatch rank 1/2: 1 request(s)" in log
    _, samples = _written(out)
    assert sorted(s["doc_id"] for s in samples) == [0, 1]
