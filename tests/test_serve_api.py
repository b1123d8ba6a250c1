"""The HTTP API through the official openai client against a live server on loopback (tiny preset, random weights).

What counts is the protocol, not the text: completions whole and streamed as the client parses them, usage,
the longwatch object, memory reused on a second question about the same video (by URL or uuid), and every bad
request answered with an OpenAI error object and a 4xx status, the server serving on afterwards.
"""

from __future__ import annotations

import json
import urllib.request

import httpx
import openai
import pytest

from tests.ingest_fixtures import http_server, make_video
from tests.serve_fixtures import ask_messages, backbone, client, config, live_server


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    make_video(root / "clip.mp4", seconds=6, size=(64, 64))
    outside = tmp_path_factory.mktemp("outside")
    make_video(outside / "secret.mp4", seconds=2, size=(64, 64))
    (root / "link.mp4").symlink_to(outside / "secret.mp4")
    return root, outside


@pytest.fixture(scope="module")
def server(media):
    root, _ = media
    cfg = config(**{"serve.allowed_local_media_path": str(root), "serve.max_streams": 3,
                    "serve.max_request_kb": 64, "serve.request_timeout_s": 30})
    with live_server(cfg, backbone()) as base:
        yield base


@pytest.fixture(scope="module")
def web(media):
    root, _ = media
    with http_server(root) as base:
        yield base


def _file(media, name: str = "clip.mp4") -> str:
    return (media[0] / name).as_uri()


def test_models_lists_the_served_model(server):
    models = client(server).models.list()
    assert [m.id for m in models.data] == ["tiny"]


def test_plain_completion_with_usage_and_evidence(server, media):
    c = client(server)
    r = c.chat.completions.create(model="tiny", messages=ask_messages("What is shown?", _file(media)), max_tokens=5)
    assert r.object == "chat.completion" and r.choices[0].finish_reason in ("stop", "length")
    assert isinstance(r.choices[0].message.content, str)
    assert r.usage.completion_tokens <= 5 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    lw = r.model_extra["longwatch"]
    assert lw["patches"] == 6 and lw["encoded_up_to"] == pytest.approx(6.0)
    assert lw["evidence"] and all({"t_start", "t_end", "reason"} <= set(e) for e in lw["evidence"])
    assert set(lw["memory"]) == {"device", "host", "disk"} and lw["ttft_s"] > 0


def test_second_question_answers_from_memory_without_reencoding(server, media, web):
    c = client(server)
    url = f"{web}/clip.mp4"  # an http video from a local server
    first = c.chat.completions.create(model="tiny", messages=ask_messages("What is shown?", url), max_tokens=3)
    lw1 = first.model_extra["longwatch"]
    second = c.chat.completions.create(model="tiny", messages=ask_messages("And then?", url), max_tokens=3)
    lw2 = second.model_extra["longwatch"]
    assert lw2["stream_id"] == lw1["stream_id"] and lw2["reused_memory"] and lw2["patches"] == lw1["patches"] == 6
    # the same by vLLM's uuid: the second request may leave the URL out
    a = c.chat.completions.create(model="tiny", messages=ask_messages("What?", _file(media), uuid="clip-1"),
                                  max_tokens=2).model_extra["longwatch"]
    b = c.chat.completions.create(model="tiny", messages=ask_messages("What?", None, uuid="clip-1"),
                                  max_tokens=2).model_extra["longwatch"]
    assert b["stream_id"] == a["stream_id"] and b["reused_memory"]
    streams = {s["id"]: s for s in httpx.get(f"{server}/v1/streams").json()["data"]}
    assert streams[lw1["stream_id"]]["origin"] == "chat" and streams[lw1["stream_id"]]["state"] == "ended"


def test_streamed_completion_matches_the_whole_one(server, media):
    c = client(server)
    msgs = ask_messages("What is shown?", _file(media))
    whole = c.chat.completions.create(model="tiny", messages=msgs, max_tokens=6, temperature=0)
    chunks = list(c.chat.completions.create(model="tiny", messages=msgs, max_tokens=6, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == whole.choices[0].message.content
    finals = [ch for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].model_extra["longwatch"]["reused_memory"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_sampling_parameters_and_stop(server, media):
    c = client(server)
    msgs = ask_messages("What is shown?", _file(media))
    kw = dict(model="tiny", messages=msgs, max_tokens=3, temperature=1.5, top_p=0.9)
    a = c.chat.completions.create(seed=7, **kw).choices[0].message.content
    assert c.chat.completions.create(seed=7, **kw).choices[0].message.content == a  # a seed repeats the sample
    greedy = c.chat.completions.create(model="tiny", messages=msgs, max_tokens=6).choices[0].message.content
    assert len(greedy) > 2
    stop = greedy[1:3]
    r = c.chat.completions.create(model="tiny", messages=msgs, max_tokens=6, stop=[stop])
    assert r.choices[0].finish_reason == "stop" and stop not in r.choices[0].message.content
    assert greedy.startswith(r.choices[0].message.content)


def test_an_answer_picked_from_choices_whole_streamed_and_by_either_name(server, media):
    c = client(server)
    msgs = ask_messages("What is shown?", _file(media))
    picks = ["a red circle", "a sign that says KIWI", "nothing"]
    whole = c.chat.completions.create(model="tiny", messages=msgs, extra_body={"structured_outputs": {"choice": picks}})
    text = whole.choices[0].message.content
    assert text in picks and whole.choices[0].finish_reason == "stop"
    scored = whole.model_extra["longwatch"]["choices"]
    assert [s["choice"] for s in scored] == picks and sum(s["prob"] for s in scored) == pytest.approx(1, abs=1e-3)
    assert max(scored, key=lambda s: s["logprob"])["choice"] == text
    assert whole.usage.completion_tokens >= 1
    old = c.chat.completions.create(model="tiny", messages=msgs, extra_body={"guided_choice": picks})
    assert old.choices[0].message.content == text
    chunks = list(c.chat.completions.create(model="tiny", messages=msgs, stream=True,
                                            extra_body={"structured_outputs": {"choice": picks}}))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == text


def _post(server: str, body: object, raw: bytes | None = None, headers: dict | None = None) -> httpx.Response:
    content = raw if raw is not None else json.dumps(body).encode()
    return httpx.post(f"{server}/v1/chat/completions", content=content, timeout=60,
                      headers={"content-type": "application/json", **(headers or {})})


def _error(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"] and "Traceback" not in r.text
    if code:
        assert err["code"] == code, err
    return err


BAD_BODIES = [
    ({"messages": [{"role": "user", "content": "hi"}]}, 400, "invalid_request"),  # no model
    ({"model": "tiny", "messages": []}, 400, "invalid_request"),
    ({"model": "tiny", "messages": "hello"}, 400, "invalid_request"),
    ({"model": "tiny", "messages": [{"role": "robot", "content": "x"}]}, 400, "invalid_request"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "what?"}]}, 400, "missing_video"),
    ({"model": "tiny", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}},
                                                                 {"type": "text", "text": "q"}]}]}, 400,
     "unsupported_content"),
    ({"model": "gpt-4o", "messages": [{"role": "user", "content": "q"}]}, 404, "model_not_found"),
    ({"model": "tiny", "n": 2, "messages": [{"role": "user", "content": "q"}]}, 400, "invalid_request"),
    ({"model": "tiny", "max_tokens": 10**6, "messages": [{"role": "user", "content": "q"}]}, 400, "invalid_request"),
    ({"model": "tiny", "temperature": -1, "messages": [{"role": "user", "content": "q"}]}, 400, "invalid_request"),
    ({"model": "tiny", "stop": ["a", "b", "c", "d", "e"], "messages": [{"role": "user", "content": "q"}]}, 400,
     "invalid_request"),
    ({"model": "tiny", "stream_id": "stream-nope", "messages": [{"role": "user", "content": "q"}]}, 404,
     "stream_not_found"),
    ({"model": "tiny", "policy": "lru", "messages": ask_messages("q", "http://127.0.0.1:9/x.mp4")}, 400,
     "invalid_policy"),
    ({"model": "tiny", "messages": ask_messages("q", "ftp://example.com/x.mp4")}, 400, "unsupported_scheme"),
    ({"model": "tiny", "messages": ask_messages("q", "/etc/passwd")}, 400, "invalid_url"),
    ({"model": "tiny", "messages": ask_messages("q", None, uuid="never-seen")}, 400, "unknown_video"),
    ({"model": "tiny", "structured_outputs": {"json": {"type": "object"}}, "messages": ask_messages("q", "/x.mp4")},
     400, "invalid_request"),
    ({"model": "tiny", "structured_outputs": {"choice": []}, "messages": ask_messages("q", "/x.mp4")}, 400,
     "invalid_request"),
    ({"model": "tiny", "guided_choice": ["a", "a"], "messages": ask_messages("q", "/x.mp4")}, 400, "invalid_request"),
    ({"model": "tiny", "guided_choice": "a", "messages": ask_messages("q", "/x.mp4")}, 400, "invalid_request"),
    ({"model": "tiny", "guided_choice": ["a"], "structured_outputs": {"choice": ["a"]},
      "messages": ask_messages("q", "/x.mp4")}, 400, "invalid_request"),
]


@pytest.mark.parametrize("body,status,code", BAD_BODIES)
def test_bad_bodies_are_openai_errors(server, body, status, code):
    _error(_post(server, body), status, code)


def test_broken_json_oversized_body_and_unknown_route(server):
    _error(_post(server, None, raw=b"{not json"), 400, "invalid_request")
    _error(_post(server, None, raw=b""), 400, "invalid_request")
    _error(_post(server, None, raw=json.dumps({"model": "tiny", "pad": "x" * 70_000}).encode()), 413,
           "request_too_large")
    chunks = (b" " * 8192 for _ in range(10))  # no Content-Length: counted while read
    _error(httpx.post(f"{server}/v1/streams", content=chunks, headers={"content-type": "application/json"}), 413,
           "request_too_large")
    _error(httpx.get(f"{server}/v1/nothing"), 404, "not_found")
    _error(httpx.put(f"{server}/v1/models"), 405)
    assert httpx.get(f"{server}/health").json()["status"] == "ok"


def test_client_raises_typed_errors(server):
    c = client(server)
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="nope", messages=[{"role": "user", "content": "q"}])
    with pytest.raises(openai.BadRequestError, match="no video"):
        c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "q"}], stream=True)


def test_refused_questions_are_4xx_even_when_streamed(server, media):
    """Memory refuses a question longer than its answer reserve before any token: a 400, not an in-stream error."""
    c = client(server)
    with pytest.raises(openai.BadRequestError, match="answer reserve") as e:
        c.chat.completions.create(model="tiny", messages=ask_messages("why " * 400, _file(media)), stream=True)
    assert e.value.status_code == 400 and e.value.code == "invalid_question"


def test_local_paths_only_inside_the_allowed_folder(server, media):
    root, outside = media
    err = _error(_post(server, {"model": "tiny", "messages": ask_messages("q", (outside / "secret.mp4").as_uri())}),
                 403, "local_media_not_allowed")
    assert "outside the allowed folder" in err["message"]
    _error(_post(server, {"model": "tiny", "messages": ask_messages("q", _file(media, "link.mp4"))}), 403,
           "local_media_not_allowed")  # a symlink out of the folder is outside it
    _error(_post(server, {"model": "tiny", "messages": ask_messages("q", f"{root.as_uri()}/../{outside.name}/x.mp4")}),
           403, "local_media_not_allowed")
    _error(_post(server, {"model": "tiny", "messages": ask_messages("q", _file(media, "missing.mp4"))}), 404,
           "file_not_found")
    (root / "not-a-video.mp4").write_bytes(b"hello")
    _error(_post(server, {"model": "tiny", "messages": ask_messages("q", _file(media, "not-a-video.mp4"))}), 400,
           "invalid_video")


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data", "rtsp://10.1.2.3:554/live",
                                 "http://[::1]:8080/x.mp4", "rtsp://192.168.0.10/stream", "http://100.64.0.1/x",
                                 "http://[::ffff:10.0.0.1]/x.mp4", "http://0.0.0.0:80/x"])
def test_hosts_not_allowed_are_refused_before_connecting(server, url):
    for r in (_post(server, {"model": "tiny", "messages": ask_messages("q", url)}),
              httpx.post(f"{server}/v1/streams", json={"source": url})):
        err = _error(r, 403, "source_host_not_allowed")
        assert "--allowed-source-hosts" in err["message"]


def test_capacity_is_429_and_idle_chat_videos_make_room(server, media):
    created = []
    for _ in range(4):
        r = httpx.post(f"{server}/v1/streams", json={"source": "rtsp://127.0.0.1:9/none"})
        if r.status_code != 201:
            break
        created.append(r.json()["id"])
    # the idle chat videos of earlier tests were freed to make room; three API streams fill the server
    assert len(created) == 3
    err = _error(r, 429, "capacity_reached")
    assert "serve.max_streams" in err["message"]
    with pytest.raises(openai.RateLimitError):
        client(server).chat.completions.create(model="tiny", messages=ask_messages("q", _file(media)))
    for sid in created:
        assert httpx.delete(f"{server}/v1/streams/{sid}").json() == {"id": sid, "object": "stream.deleted",
                                                                    "deleted": True}
    _error(httpx.delete(f"{server}/v1/streams/{created[0]}"), 404, "stream_not_found")
    r = client(server).chat.completions.create(model="tiny", messages=ask_messages("q", _file(media)), max_tokens=2)
    assert r.model_extra["longwatch"]["patches"] == 6  # serving on after all of the above


def test_stream_requests_are_checked(server):
    for body, param in (({"source": "rtsp://127.0.0.1:9/x", "fps": 100}, "fps"),
                        ({"source": "rtsp://127.0.0.1:9/x", "frame_size": "huge"}, "frame_size"),
                        ({"source": "rtsp://127.0.0.1:9/x", "host_budget": "1TB"}, "host_budget"),
                        ({"source": "rtsp://127.0.0.1:9/x", "policy": "lru"}, "policy"),
                        ({"source": "rtsp://127.0.0.1:9/x", "colour": "red"}, "colour"),
                        ({}, "source")):
        err = _error(httpx.post(f"{server}/v1/streams", json=body), 400)
        assert param in (err["param"] or "") + err["message"], err


@pytest.fixture(scope="module")
def keyed(media, tmp_path_factory):
    keyfile = tmp_path_factory.mktemp("keys") / "keys.txt"
    keyfile.write_text("# one per line\nsecret-one\n\nsecret-two\n")
    from longwatch.app.serve.security import load_api_keys

    with live_server(config(), backbone(), load_api_keys(str(keyfile), env={})) as base:
        yield base


def test_api_keys(keyed):
    with pytest.raises(openai.AuthenticationError):
        client(keyed, "wrong").models.list()
    _error(httpx.get(f"{keyed}/v1/models"), 401, "invalid_api_key")
    _error(httpx.get(f"{keyed}/v1/streams", headers={"Authorization": "Basic c2VjcmV0LW9uZQ=="}), 401)
    assert [m.id for m in client(keyed, "secret-two").models.list().data] == ["tiny"]
    req = urllib.request.Request(f"{keyed}/v1/streams", headers={"Authorization": "Bearer secret-one"})
    assert json.loads(urllib.request.urlopen(req).read())["data"] == []
    assert httpx.get(f"{keyed}/health").status_code == 200  # liveness needs no key

