"""A chat completion from memory: the request read into a plan (question, stream, sampling), then answered.

`plan` checks everything a request can get wrong before any model work (APIError 4xx) and finds the
memory to answer from: a stream named by `stream_id`, or the video of a `video_url` part, encoded once
and found again by its URL or uuid. `run` waits until the video is encoded far enough, takes the model,
asks, and hands text pieces out as they come. Only the question of the last user message is asked:
memory answers one question at a time, so earlier turns and system messages are not part of it.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from longwatch.app.config import Config
from longwatch.app.serve.errors import APIError
from longwatch.app.serve.registry import Stream, StreamRegistry
from longwatch.app.serve.schemas import ChatRequest, OtherPart, TextPart, VideoPart
from longwatch.app.serve.security import SourcePolicy
from longwatch.app.serve.specs import policy_of, video_spec
from longwatch.app.serve.textflow import Piece, TextFlow
from longwatch.app.streaming import answer_dict
from longwatch.backbone.model import Sampling
from longwatch.backbone.choices import check_choices
from longwatch.memory.engine import Answer

MAX_STOPS = 4
"""As OpenAI: at most four stop strings."""
Emit = Callable[[Piece], None]


@dataclass
class Plan:
    question: str
    stream: Stream
    """Acquired for this request; run() releases it."""
    created: bool
    """The video was first seen in this request (encoded now); False: answered from memory already there."""
    sampling: Sampling
    stops: list[str]
    at: float | None
    until: float | None
    choices: list[str] | None = None
    """structured_outputs.choice (or guided_choice): the answer is one of these."""


@dataclass
class Outcome:
    answer: Answer
    finish_reason: str
    wait_s: float
    """Seconds spent waiting for the video to be encoded far enough and for the model."""


def _question_and_video(req: ChatRequest) -> tuple[str, VideoPart | None]:
    """The text of the last user message, and the one video the messages name (if any)."""
    question, videos = "", []
    users = [(i, m) for i, m in enumerate(req.messages) if m.role == "user"]
    if not users:
        raise APIError(400, "no user message: the question goes in a message with role 'user'", "invalid_request",
                       "messages")
    for i, msg in users:
        parts = [TextPart(type="text", text=msg.content)] if isinstance(msg.content, str) else (msg.content or [])
        texts = []
        for j, part in enumerate(parts):
            if isinstance(part, TextPart):
                texts.append(part.text)
            elif isinstance(part, VideoPart):
                videos.append(part)
            elif isinstance(part, OtherPart):
                raise APIError(400, f"content parts of type {part.type!r} are not supported (text and video_url are)",
                               "unsupported_content", f"messages.{i}.content.{j}.type")
        if i == users[-1][0]:
            question = "\n".join(t for t in texts if t.strip())
    if not question.strip():
        raise APIError(400, "the last user message has no text: ask a question", "invalid_request", "messages")
    named = {(v.video_url.url, v.uuid or v.video_url.uuid) for v in videos}
    if len(named) > 1:
        raise APIError(400, "one video per request: the messages name several", "too_many_videos", "messages")
    return question.strip(), videos[0] if videos else None


def _choices(req: ChatRequest) -> list[str] | None:
    """structured_outputs.choice or guided_choice, checked (APIError 400 naming the field); None when neither."""
    so = req.structured_outputs
    if so is not None:
        other = sorted(k for k, v in (so.model_extra or {}).items() if v is not None)
        if other:
            raise APIError(400, f"structured_outputs.{other[0]} is not supported (structured_outputs.choice is)",
                           "invalid_request", f"structured_outputs.{other[0]}")
    given = [(f, v) for f, v in (("structured_outputs.choice", so.choice if so else None),
                                 ("guided_choice", req.guided_choice)) if v is not None]
    if not given:
        return None
    if len(given) > 1:
        raise APIError(400, "give structured_outputs.choice or guided_choice, not both", "invalid_request",
                       "guided_choice")
    field, value = given[0]
    try:
        return check_choices(value, field)
    except ValueError as e:
        raise APIError(400, str(e), "invalid_request", field) from None


class ChatService:
    """Plans and runs chat completions on one backbone; at most serve.max_pending at once (429 beyond)."""

    def __init__(self, cfg: Config, backbone: Any, registry: StreamRegistry, sources: SourcePolicy,
                 model_id: str) -> None:
        self.cfg, self.bb, self.registry, self.sources, self.model_id = cfg, backbone, registry, sources, model_id
        parser = cfg.serve.reasoning_parser
        self.reasoning = parser == "qwen3" or (parser == "auto" and "thinking" in backbone.name.lower())
        self._pending = 0
        self._lock = threading.Lock()

    # ---- admission ------------------------------------------------------------------------------

    def admit(self) -> None:
        """Count one more request in flight; APIError 429 at serve.max_pending. Pair with leave()."""
        with self._lock:
            if self._pending >= self.cfg.serve.max_pending:
                raise APIError(429, f"{self._pending} requests are already running or waiting for the model "
                               "(serve.max_pending); try again shortly", "too_many_requests")
            self._pending += 1

    def leave(self) -> None:
        with self._lock:
            self._pending -= 1

    # ---- planning -------------------------------------------------------------------------------

    def sampling(self, req: ChatRequest) -> Sampling:
        """The server's sampling (config, else the checkpoint's generation config) with the request's fields."""
        base, limit = self.bb.sampling, self.cfg.serve.max_tokens
        max_tokens = req.max_completion_tokens or req.max_tokens or base.max_new_tokens
        if max_tokens > limit:
            raise APIError(400, f"max_tokens: {max_tokens} is over the server's limit {limit} (serve.max_tokens)",
                           "invalid_request", "max_tokens")
        temperature = base.temperature if req.temperature is None else req.temperature
        seed = req.seed if req.seed is not None else (base.seed if temperature == 0 else secrets.randbits(31))
        asked = {k: getattr(req, k) for k in ("top_p", "top_k", "min_p", "repetition_penalty") if getattr(req, k) is not None}
        return dataclasses.replace(base, temperature=temperature, max_new_tokens=max_tokens, seed=seed, **asked)

    def plan(self, req: ChatRequest) -> Plan:
        """Everything checked; the stream to answer from found or started, and acquired. Blocking (DNS)."""
        if req.model not in (self.model_id, self.bb.name, self.cfg.model.name):
            raise APIError(404, f"the model {req.model!r} does not exist; this server serves {self.model_id!r}",
                           "model_not_found", "model")
        if req.n != 1:
            raise APIError(400, "n: only one choice per request is supported", "invalid_request", "n")
        if req.logprobs:
            raise APIError(400, "logprobs are not supported", "invalid_request", "logprobs")
        if req.tools:
            raise APIError(400, "tools are not supported", "invalid_request", "tools")
        stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        if len(stops) > MAX_STOPS or any(not s or len(s) > 256 for s in stops):
            raise APIError(400, f"stop: at most {MAX_STOPS} non-empty strings of up to 256 characters",
                           "invalid_request", "stop")
        sampling = self.sampling(req)
        choices = _choices(req)
        question, video = _question_and_video(req)
        if req.stream_id and video is not None:
            raise APIError(400, "give either stream_id or a video_url part, not both", "invalid_request", "stream_id")
        if req.stream_id:
            if req.policy is not None and req.policy != self.registry.get(req.stream_id).spec.memory.policy:
                raise APIError(400, f"stream {req.stream_id} runs another policy; policy only applies to a video "
                               "first seen in a request", "invalid_request", "policy")
            stream, created = self.registry.get(req.stream_id, acquire=True), False
        elif video is not None:
            stream, created = self._video(video, policy_of(req.policy, self.cfg))
        else:
            raise APIError(400, "no video: add a {'type': 'video_url', 'video_url': {'url': ...}} content part, "
                           "or pass stream_id (extra_body) to ask a live stream", "missing_video", "messages")
        return Plan(question, stream, created, sampling, stops, req.at, req.until, choices)

    def _video(self, part: VideoPart, policy: str) -> tuple[Stream, bool]:
        url, uuid = part.video_url.url, part.uuid or part.video_url.uuid
        key = f"{policy}|uuid:{uuid}" if uuid else f"{policy}|url:{url}"
        if not url:
            known = self.registry.find_video(key)
            if known is None:
                raise APIError(400, f"no video is known by uuid {uuid!r} (policy {policy}); send its url too",
                               "unknown_video", "video_url.url")
            return known, False
        source = self.sources.check(url, "video_url.url")
        return self.registry.video(video_spec(source, key, policy, self.cfg, local="://" not in source))

    # ---- running --------------------------------------------------------------------------------

    def _wait_ready(self, plan: Plan, deadline: float) -> None:
        stream, at = plan.stream, plan.at
        worker = stream.worker

        def ready() -> bool:
            if at is not None:
                return worker.t_last >= at
            return worker.patches >= 1 if stream.live else False  # a file: wait until all of it is encoded

        worker.wait(ready, max(0.0, deadline - time.monotonic()))
        if stream.closing.is_set():
            raise APIError(409, f"stream {stream.id} was deleted while this request waited", "stream_deleted")
        info = stream.info()
        if info.patches == 0:
            if info.state == "failed":
                raise APIError(400, f"the video could not be read: {info.reason}", "invalid_video")
            if info.state == "ended":
                raise APIError(400, "the video has no frames", "invalid_video")
            raise APIError(408, f"no frame of {info.source} arrived within {self.cfg.serve.request_timeout_s:g} s "
                           f"(state {info.state}); ask again later", "timeout")
        if worker.running and not ready():
            raise APIError(408, f"the video is still being encoded ({info.encoded_up_to:g} s so far, stream "
                           f"{stream.id}); ask again later, or pass `at` to ask about what is encoded",
                           "timeout")

    def run(self, plan: Plan, emit: Emit, cancelled: Callable[[], bool], on_start: Callable[[], None]) -> Outcome:
        """Wait, take the model, answer; `on_start()` just before the first piece (or the end of an answer
        without any), so that everything refused before a token exists is still a plain 4xx response.

        Releases plan.stream. APIError 408 when the video or the model is not ready by serve.request_timeout_s.
        """
        t0 = time.monotonic()
        deadline = t0 + self.cfg.serve.request_timeout_s
        started: list[bool] = []

        def send(piece: Piece) -> None:
            if not started:
                started.append(True)
                on_start()
            emit(piece)

        try:
            self._wait_ready(plan, deadline)
            memory = plan.stream.worker.memory
            # wait (bounded) while another answer holds this video's memory in place; ask() takes it itself
            if not memory.lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise APIError(408, "this video's memory stayed busy with another answer past the time limit "
                               "(serve.request_timeout_s); try again", "timeout")
            memory.lock.release()
            flow = TextFlow(self.reasoning, plan.stops)
            wait_s = time.monotonic() - t0
            answer = self._ask(plan, flow, send, cancelled)
            for piece in flow.finish():
                send(piece)
            if not started:
                on_start()
            plan.stream.worker.note_memory(answer.memory)
            return Outcome(answer, "stop" if answer.stopped or flow.stopped else "length", wait_s)
        finally:
            plan.stream.release()

    def _ask(self, plan: Plan, flow: TextFlow, send: Emit, cancelled: Callable[[], bool]) -> Answer:
        stream = plan.stream

        def on_text(text: str) -> None:
            for piece in flow.feed(text):
                send(piece)

        def should_stop() -> bool:
            return flow.stopped or cancelled() or stream.closing.is_set()

        until = min((t for t in (plan.at, plan.until) if t is not None), default=None)
        try:
            return stream.worker.memory.ask(plan.question, on_text=on_text, now=plan.at, sampling=plan.sampling,
                                            should_stop=should_stop, until=until, choices=plan.choices)
        except ValueError as e:  # nothing visible yet, a question too long for the answer reserve
            raise APIError(400, str(e), "invalid_question") from None

    def longwatch_fields(self, plan: Plan, out: Outcome) -> dict[str, Any]:
        """The `longwatch` object of a response: which memory answered, with what evidence, how fast."""
        info = plan.stream.info()
        fields = answer_dict(out.answer)
        fields.pop("answer", None)
        fields.pop("tokens", None)
        return {"stream_id": plan.stream.id, "source": info.source, "policy": info.policy,
                "reused_memory": not plan.created, "encoded_up_to": info.encoded_up_to, "wait_s": round(out.wait_s, 4),
                "question_tokens": out.answer.question_tokens, "answer_copy_bytes": out.answer.copied_bytes, **fields}
