"""A real answer over HTTP: the shipped needle-tiny checkpoint reads the demo video's sign through the openai client.

The demo's NeedleStream video (the sign KIWI at 00:11-00:13) is served by a local HTTP server (as a web-ready
MP4, its index first: Python's server answers no Range requests, so ffmpeg could not seek to an index at the
end of a file larger than its first read; see README, HTTP API, "not done yet"); the question
names 00:12 and asks `at` 14 s, so the request waits only until 14 s are encoded. A second question about the
same URL is answered from the same memory (no patch encoded again).
"""

from __future__ import annotations

import subprocess

import pytest

from longwatch.backbone.shipped import is_available
from tests.ingest_fixtures import http_server
from tests.serve_fixtures import ask_messages, backbone, client, config, live_server

pytestmark = pytest.mark.skipif(not is_available("needle-tiny"), reason="needle-tiny weights are not shipped here")


def test_needle_tiny_reads_the_sign_over_http(tmp_path, monkeypatch):
    from longwatch.eval.needlestream import demo_plan
    from longwatch.eval.needlestream_render import write_video

    monkeypatch.setenv("LONGWATCH_CACHE", str(tmp_path / "cache"))
    write_video(demo_plan(), tmp_path / "raw.mp4")
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(tmp_path / "raw.mp4"), "-c", "copy", "-movflags", "+faststart",
                    str(tmp_path / "demo.mp4")], check=True, timeout=60)
    cfg = config(**{"model.name": "needle-tiny", "ingest.frame_size": "128", "memory.policy": "full",
                    "serve.request_timeout_s": 120})
    with http_server(tmp_path) as web, live_server(cfg, backbone("needle-tiny")) as base:
        c = client(base)
        url = f"{web}/demo.mp4"
        r = c.chat.completions.create(model="needle-tiny", max_tokens=8, extra_body={"at": 14.0},
                                      messages=ask_messages("What word was on the sign at 00:12?", url))
        assert "KIWI" in r.choices[0].message.content
        lw = r.model_extra["longwatch"]
        assert lw["encoded_up_to"] >= 14.0 and all(e["t_start"] < 14.0 for e in lw["evidence"])
        again = c.chat.completions.create(model="needle-tiny", max_tokens=8, extra_body={"at": 14.0},
                                          messages=ask_messages("What word was on the sign at 00:12?", url))
        assert again.model_extra["longwatch"]["reused_memory"] and "KIWI" in again.choices[0].message.content
        picks = ["LIME", "KIWI", "No sign was shown", "a sign that says KIWI"]
        chosen = c.chat.completions.create(model="needle-tiny", extra_body={"at": 14.0, "structured_outputs": {
            "choice": picks}}, messages=ask_messages("What word was on the sign at 00:12?", url))
        assert chosen.choices[0].message.content == "KIWI" and chosen.choices[0].finish_reason == "stop"
        probs = {c["choice"]: c["prob"] for c in chosen.model_extra["longwatch"]["choices"]}
        assert max(probs, key=probs.get) == "KIWI" and probs["KIWI"] > 0.5
