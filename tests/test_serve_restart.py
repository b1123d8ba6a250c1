"""`longwatch serve --memory-dir`: a restarted server reopens its API streams (memory from their journals, the
source continued, not encoded again) and their watches; a deleted stream's memory and manifest line go; the
manifest's round trip and a live source's continued timeline (Resume), without a model."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pytest

from longwatch.app.serve.manifest import Manifest, spec_from_dict, spec_to_dict
from longwatch.app.serve.specs import StreamSpec
from longwatch.app.worker import Resume
from longwatch.ingest.config import IngestConfig
from longwatch.ingest.patches import TemporalPatch
from longwatch.memory.config import MemoryConfig
from tests.ingest_fixtures import make_video
from tests.serve_fixtures import ask_messages, backbone, client, config, live_server


def _wait(base: str, sid: str, patches: int, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = httpx.get(f"{base}/v1/streams/{sid}").json()
        if info["patches"] >= patches and info["state"] == "ended":
            return info
        time.sleep(0.1)
    raise AssertionError(f"{sid} did not end with {patches} patches: {info}")


def test_a_restarted_server_reopens_its_streams_and_watches(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    clip = make_video(media / "clip.mp4", seconds=6, size=(64, 64))
    cfg = config(**{"serve.allowed_local_media_path": str(media), "serve.memory_dir": str(tmp_path / "memory"),
                    "memory.policy": "rekv", "ingest.realtime": True})
    with live_server(cfg, backbone()) as base:
        sid = httpx.post(f"{base}/v1/streams", json={"source": clip.as_uri(), "name": "door"}).json()["id"]
        watch = httpx.post(f"{base}/v1/streams/{sid}/watches", json={"condition": "Is a door open?"})
        assert watch.status_code == 201  # the file plays at its own pace (ingest.realtime): still running
        first = _wait(base, sid, 6)
        q = ask_messages("What was shown?")
        before = client(base).chat.completions.create(model="tiny", messages=q, max_tokens=4,
                                                      extra_body={"stream_id": sid})
    manifest = (tmp_path / "memory" / "streams.jsonl")
    assert manifest.stat().st_mode & 0o777 == 0o600 and (tmp_path / "memory" / sid / "journal.jsonl").is_file()

    with live_server(cfg, backbone()) as base:
        listed = httpx.get(f"{base}/v1/streams").json()["data"]
        assert [(s["id"], s["name"]) for s in listed] == [(sid, "door")]
        again = _wait(base, sid, 6)
        time.sleep(0.5)  # the file was reopened: what the memory holds is skipped, nothing encoded twice
        assert httpx.get(f"{base}/v1/streams/{sid}").json()["patches"] == again["patches"] == first["patches"]
        assert again["encoded_up_to"] == first["encoded_up_to"] and again["created"] == first["created"]
        watches = httpx.get(f"{base}/v1/streams/{sid}/watches").json()["data"]
        assert [(w["id"], w["condition"]) for w in watches] == [(watch.json()["id"], "Is a door open?")]
        after = client(base).chat.completions.create(model="tiny", messages=q, max_tokens=4,
                                                     extra_body={"stream_id": sid})
        assert after.choices[0].message.content == before.choices[0].message.content  # the same memory
        assert httpx.delete(f"{base}/v1/streams/{sid}").status_code == 200
    assert not (tmp_path / "memory" / sid).exists()
    with live_server(cfg, backbone()) as base:
        assert httpx.get(f"{base}/v1/streams").json()["data"] == []


def test_manifest_round_trip_watches_and_a_line_that_no_longer_validates(tmp_path):
    m = Manifest(tmp_path)
    spec = StreamSpec("rtsp://user:pw@cam/1", "api", IngestConfig(fps=1.0, frame_size="224"),
                      MemoryConfig(policy="sliding", window_blocks=3), name="gate")
    assert spec_from_dict(json.loads(json.dumps(spec_to_dict(spec)))) == spec
    m.add("s1", spec, 123)
    m.started("s1", 1000.5)
    m.watch("s1", "w1", {"condition": "Is a car there?", "interval_s": 2.0})
    m.watch("s1", "w2", {"condition": "Is a dog there?"})
    m.unwatch("s1", "w1")
    m.add("s2", spec, 124)
    m.remove("s2")
    broken = spec_to_dict(spec)
    broken["memory"]["policy"] = "nonsense"
    with open(m.path, "a") as f:
        f.write(json.dumps({"op": "create", "id": "s3", "spec": broken}) + "\n")
        f.write('{"op": "started", "id": "s1"')  # torn by a crash
    [e] = m.entries()
    assert (e.id, e.spec, e.created, e.epoch0) == ("s1", spec, 123, 1000.5)
    assert e.watches == ({"watch": "w2", "condition": "Is a dog there?"},)
    m.compact()
    assert [r["op"] for r in map(json.loads, m.path.read_text().splitlines())] == ["create", "started", "watch"]
    assert Manifest(tmp_path).entries() == [e]


def _patch(t: float, index: int = 0) -> TemporalPatch:
    return TemporalPatch(index, np.zeros((2, 32, 32, 3), np.uint8), (t, t + 0.5), t, t + 1.0)


def test_a_reopened_source_continues_the_restored_timeline(monkeypatch):
    resume = Resume(t_last=10.0, patches=10, epoch0=1000.0)
    # a file starts again at 0: what memory holds is skipped, the rest keeps its time
    assert resume.continued(_patch(9.0), live=False, shift=None)[0] is None
    assert resume.continued(_patch(10.0), live=False, shift=None)[0].t_start == 10.0
    # a live camera's new frames go to the wall-clock time since the stream began (here 30 s), the crash a gap
    monkeypatch.setattr(time, "time", lambda: 1031.0)
    moved, shift = resume.continued(_patch(0.0), live=True, shift=None)
    assert moved.t_start == pytest.approx(30.0) and moved.gap_before == pytest.approx(20.0)
    nxt, same = resume.continued(_patch(1.0, 1), live=True, shift=shift)
    assert same == shift and nxt.t_start == pytest.approx(31.0) and nxt.gap_before == 0
    # never before the restored end, even when the clock says so (or when epoch0 is unknown)
    monkeypatch.setattr(time, "time", lambda: 1001.0)
    assert resume.continued(_patch(0.0), live=True, shift=None)[0].t_start == pytest.approx(10.0)
    assert Resume(10.0, 10).continued(_patch(0.0), live=True, shift=None)[0].t_start == pytest.approx(10.0)
