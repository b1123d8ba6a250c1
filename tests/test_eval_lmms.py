"""lmms-eval adapter: requests grouped so each video streams once; the model resolves as `--model longwatch`."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from types import SimpleNamespace

import pytest

from longwatch.eval.lmms_adapter import config_overrides, cut, group_by_video, video_of

needs_lmms = pytest.mark.skipif(importlib.util.find_spec("lmms_eval") is None,
                                reason="lmms-eval not installed (optional extra: pip install -e '.[lmms]')")


def test_helpers_without_lmms_eval():
    assert "lmms_eval" not in sys.modules  # importing the adapter does not import lmms-eval
    assert video_of(["/d/a.mp4"]) == "/d/a.mp4" and video_of([object(), "b.MKV"]) == "b.MKV" and video_of([]) is None
    assert cut("B.\nBecause", ["\n", "."]) == "B"
    assert group_by_video([("q1", "a"), ("q2", "b"), ("q3", "a"), ("q4", None)]) == {"a": [0, 2], "b": [1], None: [3]}
    assert config_overrides({"model": "tiny", "policy": "rekv", "batch_size": 1, "memory.window_blocks": 4}) == {
        "model.name": "tiny", "memory.policy": "rekv", "memory.window_blocks": 4}
    with pytest.raises(ValueError, match="unknown model_arg 'colour'"):
        config_overrides({"colour": "red"})


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

        def ask(self, q, **kw):
            asked.append(q)
            return SimpleNamespace(text=f"{q} after {self.n} patches.\nmore")

        def close(self):
            pass

    def open_patches(path):
        opened.append(path)
        return contextlib.nullcontext(range({"a.mp4": 3, "b.mp4": 5}[path]))

    model = cls(model="tiny", policy="sliding", stream_factory=Stream, open_patches=open_patches)
    assert model.cfg.memory.policy == "sliding"
    docs = [{"v": "a.mp4"}, {"v": "b.mp4"}, {"v": "a.mp4"}]
    model.task_dict = {"t": {"test": docs}}
    reqs = [Instance("generate_until", (f"<image>Q{i}", {"until": ["\n"]}, lambda d: [d["v"]], i, "t", "test"), i,
                     {"task": "t", "doc_id": i, "repeats": 1}) for i in range(3)]
    assert model.generate_until(reqs) == ["Q0 after 3 patches.", "Q1 after 5 patches.", "Q2 after 3 patches."]
    assert opened == ["a.mp4", "b.mp4"] and asked == ["Q0", "Q2", "Q1"]
    with pytest.raises(NotImplementedError):
        model.loglikelihood(reqs)
