"""The serve layer's parts on their own: reasoning and stop strings on real token sequences, the source-host
and local-path policy, API keys, the event bus, the `serve` config section; and reasoning_content end to end."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import httpx
import pytest
from longwatch.app.config import load_config
from longwatch.app.schema import ConfigError
from longwatch.app.serve.config import ServeConfig
from longwatch.app.serve.errors import APIError
from longwatch.app.serve.events import EventBus
from longwatch.app.serve.security import SourcePolicy, check_bearer, load_api_keys
from longwatch.app.serve.textflow import TextFlow, join
from longwatch.backbone.model import AnswerStreamer
from longwatch.backbone.tokenizer import load_offline_tokenizer

from tests.ingest_fixtures import UNRESOLVABLE_HOST


@pytest.fixture(scope="module")
def tok():
    return load_offline_tokenizer()


def _flow(tok, text: str, reasoning: bool, stops: list[str] = (), whole: bool = False) -> tuple:
    """Decode `text`'s token ids as the backbone streams them (one piece per token) through a TextFlow."""
    pieces: list[str] = []
    streamer = AnswerStreamer(tok, pieces.append)
    for i in tok.encode(text):
        streamer.put(i)
    if whole:
        pieces = ["".join(pieces)]
    flow = TextFlow(reasoning, list(stops))
    out = [p for piece in pieces for p in flow.feed(piece)] + flow.finish()
    return join(out, "reasoning"), join(out, "content"), flow.stopped


@pytest.mark.parametrize("text,reasoning,content", [
    ("<think>\nThe sign reads KIWI.\n</think>\n\nKIWI", "The sign reads KIWI.\n", "KIWI"),
    ("The template opened the block.\n</think>\n\nA red square.", "The template opened the block.\n", "A red square."),
    ("<think>\nStill thinking when the tokens ran out", "Still thinking when the tokens ran out", None),
    ("<think></think>\n\nNo reasoning at all", None, "No reasoning at all"),
])
def test_qwen3_reasoning_on_token_sequences(tok, text, reasoning, content):
    assert tok.convert_tokens_to_ids(["<think>", "</think>"]) == [151667, 151668]  # single tokens, kept in text
    assert _flow(tok, text, True)[:2] == (reasoning, content)
    assert _flow(tok, text, True, whole=True)[:2] == (reasoning, content)  # streamed == whole


def test_without_a_reasoning_parser_the_text_is_content(tok):
    assert _flow(tok, "<think>x</think>y", False)[:2] == (None, "<think>x</think>y")


@pytest.mark.parametrize("text,stops,content,stopped", [
    ("Hello world, said the sign", ["o w"], "Hell", True),
    ("Hello world", ["xyz"], "Hello world", False),
    ("Hello world", ["world", "Hello"], None, True),
    ("<think>the stop o w is ignored here</think>Hello world", ["o w"], "Hell", True),
])
def test_stop_strings_across_token_boundaries(tok, text, stops, content, stopped):
    r, c, s = _flow(tok, text, "<think>" in text, stops)
    assert (c, s) == (content, stopped)
    assert _flow(tok, text, "<think>" in text, stops, whole=True)[1:] == (content, stopped)


def test_source_policy(tmp_path):
    p = SourcePolicy(("rtsp", "http", "https"), ("cam.lan", "10.1.0.0/16", "127.0.0.1"), str(tmp_path))
    assert p.check("rtsp://93.184.216.34/live", "u") == "rtsp://93.184.216.34/live"  # public, no DNS needed
    assert p.check("rtsp://user:pw@cam.lan/x", "u")  # listed by name: not even resolved
    assert p.check("http://10.1.2.3/x", "u") and p.check("http://127.0.0.1:1/x", "u")  # a listed network, address
    for url, status, code in (("http://10.2.0.1/x", 403, "source_host_not_allowed"),
                              ("http://[fe80::1]/x", 403, "source_host_not_allowed"),
                              ("http://[::1]/x", 403, "source_host_not_allowed"),
                              ("http://224.0.0.1/x", 403, "source_host_not_allowed"),
                              (f"rtsp://{UNRESOLVABLE_HOST}/x", 400, "unresolvable_host"),
                              ("rtmp://93.184.216.34/x", 400, "unsupported_scheme"),
                              ("http:///nohost", 400, "invalid_url"),
                              ("file://otherhost/x.mp4", 400, "invalid_url"),
                              ("0", 400, "invalid_url")):
        with pytest.raises(APIError) as e:
            p.check(url, "u")
        assert (e.value.status, e.value.code) == (status, code), url
    video = tmp_path / "a b.mp4"
    video.write_bytes(b"x")
    assert p.check("file://" + str(video).replace(" ", "%20"), "u") == str(video)
    with pytest.raises(APIError, match="without --allowed-local-media-path"):
        SourcePolicy(("http",), (), "").check(video.as_uri(), "u")


def test_api_keys(tmp_path):
    f = tmp_path / "keys"
    f.write_text("# keys\nalpha\n  beta  \n")
    assert load_api_keys(str(f), env={"LONGWATCH_API_KEYS": "gamma, delta"}) == {"alpha", "beta", "gamma", "delta"}
    assert load_api_keys("", env={}) == frozenset()
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(ValueError, match="holds no key"):
        load_api_keys(str(tmp_path / "empty"), env={})
    check_bearer(None, frozenset())  # no keys: loopback default, anything passes
    check_bearer("Bearer beta", frozenset({"alpha", "beta"}))
    for header in (None, "", "Bearer", "Bearer alph", "Basic alpha", "alpha"):
        with pytest.raises(APIError) as e:
            check_bearer(header, frozenset({"alpha"}))
        assert e.value.status == 401 and e.value.code == "invalid_api_key"


def test_event_bus_replays_fans_out_and_closes():
    bus = EventBus("s1")
    bus.publish("connecting", attempt=0)

    async def read(after: int, out: list) -> None:
        async for event in bus.subscribe(after):
            out.append((event.id, event.type))

    async def main() -> tuple[list, list]:
        a, b = [], []
        tasks = [asyncio.create_task(read(0, a)), asyncio.create_task(read(1, b))]
        await asyncio.sleep(0.05)
        t = threading.Thread(target=lambda: (bus.publish("streaming"), bus.publish("gap", gap_s=1.0),
                                             bus.publish("ended"), bus.close()))
        t.start()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        t.join()
        return a, b

    a, b = asyncio.run(main())
    assert a == [(1, "connecting"), (2, "streaming"), (3, "gap"), (4, "ended")] and b == a[1:]
    assert bus.publish("streaming") is None and bus.closed
    assert asyncio.run(_drain(bus)) == [1, 2, 3, 4]  # a subscriber after the end gets the history, then stops


async def _drain(bus: EventBus) -> list[int]:
    return [e.id async for e in bus.subscribe(0)]


def test_serve_section_validates_and_its_commented_defaults_match():
    import yaml
    from longwatch.eval.config import default_config_text

    for override, needle in (({"serve.port": 0}, "serve.port"), ({"serve.max_streams": 0}, "serve.max_streams"),
                             ({"serve.reasoning_parser": "x"}, "serve.reasoning_parser"),
                             ({"serve.allowed_schemes": "file"}, "serve.allowed_schemes"),
                             ({"serve.hots": "x"}, "serve.hots")):
        with pytest.raises(ConfigError, match=needle):
            load_config(None, override)
    shown = yaml.safe_load(default_config_text())["serve"]  # the packaged file's section, as written
    assert set(shown) == {f.name for f in dataclasses.fields(ServeConfig)}
    assert load_config(None, {}).serve == ServeConfig()


def test_reasoning_content_whole_and_streamed_through_the_client(monkeypatch, tmp_path):
    """A Thinking checkpoint's reply, scripted as token pieces: reasoning_content as vLLM returns it."""
    from longwatch.memory.engine import Answer

    from tests.ingest_fixtures import make_video
    from tests.serve_fixtures import ask_messages, backbone, client, config, live_server

    make_video(tmp_path / "clip.mp4", seconds=2, size=(64, 64))
    script = ["<think>", "\n", "A", " sign", ".", "\n", "</think>", "\n\n", "KI", "WI"]

    def ask(self, question, on_text=None, sampling=None, should_stop=None, **kw):
        for piece in script:
            on_text(piece)
        return Answer(text="".join(script), token_ids=list(range(len(script))), ttft_s=0.01, prefill_s=0.0,
                      decode_s=0.0, retrieval_s=0.0, evidence=[], memory=self.stats(), stopped=True,
                      question_tokens=3, context_tokens=10)

    monkeypatch.setattr("longwatch.memory.stream.MemoryStream.ask", ask)
    cfg = config(**{"serve.reasoning_parser": "qwen3", "serve.allowed_local_media_path": str(tmp_path)})
    with live_server(cfg, backbone()) as base:
        c, msgs = client(base), ask_messages("What was on the sign?", (tmp_path / "clip.mp4").as_uri())
        r = c.chat.completions.create(model="tiny", messages=msgs)
        assert r.choices[0].message.content == "KIWI" and r.choices[0].finish_reason == "stop"
        assert r.choices[0].message.model_extra["reasoning_content"] == "A sign.\n"
        chunks = list(c.chat.completions.create(model="tiny", messages=msgs, stream=True))
        deltas = [ch.choices[0].delta for ch in chunks if ch.choices]
        assert "".join(d.model_extra.get("reasoning_content") or "" for d in deltas) == "A sign.\n"
        assert "".join(d.content or "" for d in deltas) == "KIWI"
        health = httpx.get(f"{base}/health").json()
        assert r.usage.prompt_tokens == 13 and health["streams"] == 1
        assert health["batching"]["patches"] >= 1  # the video was encoded by the shared batch encoder
        assert set(health["answer_batching"]) == {"steps", "tokens", "largest"}  # scripted answers here: no rows


def test_requests_beyond_max_pending_are_429():
    from types import SimpleNamespace

    from longwatch.app.serve.chat import ChatService

    from tests.serve_fixtures import config

    chat = ChatService(config(**{"serve.max_pending": 2}), SimpleNamespace(name="tiny"), None, None, "tiny")
    chat.admit()
    chat.admit()
    with pytest.raises(APIError) as e:
        chat.admit()
    assert e.value.status == 429 and e.value.code == "too_many_requests"
    chat.leave()
    chat.admit()  # a slot given back is taken again
