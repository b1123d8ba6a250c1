"""Request and response bodies of the HTTP API, as pydantic models (the OpenAI chat shapes plus longwatch's own).

Chat requests ignore fields they do not know (OpenAI clients send many), except the ones whose meaning
would silently change (n > 1, logprobs, tools): those are refused by chat.py. Stream requests are our own
API and refuse unknown fields, so a typo fails loudly.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- chat requests ------------------------------------------------------------------------------

class VideoURL(_Loose):
    url: str | None = Field(None, max_length=8192)
    """http(s), rtsp(s), rtmp(s) or file:// (under --allowed-local-media-path); may be left out with a known uuid."""
    uuid: str | None = Field(None, max_length=256)


class TextPart(_Loose):
    type: Literal["text"]
    text: str


class VideoPart(_Loose):
    type: Literal["video_url"]
    video_url: VideoURL
    uuid: str | None = Field(None, max_length=256)
    """vLLM's multimodal uuid: names the video, so a later request can reuse its memory."""


class OtherPart(BaseModel):
    """Any other content part (image_url, input_audio, ...): parsed so chat.py can refuse it by name."""

    model_config = ConfigDict(extra="allow")
    type: str


ContentPart = Annotated[TextPart | VideoPart | OtherPart, Field(union_mode="left_to_right")]
"""Tried in this order, so a text or video part is never taken for an unknown one."""


class Message(_Loose):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = Field(None, union_mode="left_to_right")


class StreamOptions(_Loose):
    include_usage: bool = False


class StructuredOutputs(BaseModel):
    """vLLM's structured_outputs (extra_body): only `choice` is supported; chat.py refuses the others by name."""

    model_config = ConfigDict(extra="allow")
    choice: list[str] | None = Field(None, max_length=64)


class ChatRequest(_Loose):
    model: str = Field(max_length=512)
    messages: list[Message] = Field(min_length=1, max_length=256)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0)
    """As vLLM's extra sampling parameters (extra_body): 0 = off."""
    min_p: float | None = Field(None, ge=0.0, lt=1.0)
    repetition_penalty: float | None = Field(None, gt=0.0, le=10.0)
    seed: int | None = Field(None, ge=0, lt=2**63)
    stop: str | list[str] | None = None
    n: int = 1
    logprobs: bool | None = None
    tools: list[Any] | None = None
    # longwatch's own, sent as the openai client's extra_body
    stream_id: str | None = Field(None, max_length=128)
    """Ask a live stream made with POST /v1/streams instead of a video in the messages."""
    at: float | None = Field(None, ge=0.0)
    """Answer as of this stream time (seconds): wait until it is encoded, hide what comes after."""
    until: float | None = Field(None, ge=0.0)
    """Hide blocks that start at or after this stream time, without waiting."""
    structured_outputs: StructuredOutputs | None = None
    """{"choice": [...]}: the answer is exactly one of the choices, the one the model finds most probable (vLLM's
    name; `guided_choice` is its older spelling, accepted too)."""
    guided_choice: list[str] | None = Field(None, max_length=64)
    policy: str | None = Field(None, max_length=32)
    """Memory policy for a video first seen in this request (full, sliding, rekv, infinipot, streammem, livevlm,
    streamchat)."""


# ---- chat responses -----------------------------------------------------------------------------

class Usage(BaseModel):
    prompt_tokens: int
    """The question's tokens plus the memory it attended (context_tokens)."""
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    reasoning_content: str | None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    longwatch: dict[str, Any]
    """Evidence (block times and why each was used), ttft_s, memory per tier, the stream it came from."""


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None


class ChatChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    longwatch: dict[str, Any] | None = None


# ---- models -------------------------------------------------------------------------------------

class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "longwatch"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# ---- streams ------------------------------------------------------------------------------------

class StreamCreate(_Strict):
    source: str = Field(min_length=1, max_length=8192)
    """rtsp(s)://, rtmp(s)://, http(s):// (HLS too), or file:// under --allowed-local-media-path."""
    name: str | None = Field(None, max_length=200)
    fps: float | None = Field(None, gt=0.0)
    frame_size: str | None = Field(None, max_length=16)
    """S (an SxS pixel budget, aspect kept) or HxW; multiples of 32."""
    policy: str | None = Field(None, max_length=32)
    device_budget: str | int | None = None
    """At most the server's memory.device_budget; bytes or 64MB / 2GiB."""
    host_budget: str | int | None = None
    disk_budget: str | int | None = None
    window_blocks: int | None = Field(None, ge=1)
    retrieve_blocks: int | None = Field(None, ge=0)


class StreamInfo(BaseModel):
    id: str
    object: Literal["stream"] = "stream"
    created: int
    name: str | None = None
    origin: Literal["api", "chat"]
    """api: made with POST /v1/streams; chat: a video a chat completion named (freed when idle)."""
    source: str
    """Credentials removed."""
    live: bool
    state: str
    """connecting | streaming | reconnecting | ended | failed"""
    reason: str | None = None
    attempt: int = 0
    next_retry_s: float | None = None
    policy: str
    fps: float
    frame_size: str
    patches: int
    encoded_up_to: float
    """End of the newest patch in memory, stream seconds."""
    lag_s: float
    """How far decoding trails the source's live edge."""
    dropped_frames: int
    gaps: int
    gap_s: float
    reconnects: int
    rate: float
    """Stream seconds encoded per wall-clock second, recently (1.0 = real time)."""
    memory: dict[str, Any] | None = None
    """Bytes, peaks, budgets and blocks per tier (device, host, disk)."""


class StreamList(BaseModel):
    object: Literal["list"] = "list"
    data: list[StreamInfo]


class Deleted(BaseModel):
    id: str
    object: Literal["stream.deleted"] = "stream.deleted"
    deleted: bool = True


# ---- watches ------------------------------------------------------------------------------------

class WatchCreate(_Strict):
    condition: str = Field(min_length=1, max_length=300)
    """A yes/no question about what is on screen ("Is a red square on screen?")."""
    interval_s: float = Field(1.0, gt=0.0, le=3600.0)
    """Stream seconds between checks: at most one short forward per interval."""
    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    """Fires when P(Yes) reaches it after having been below (or at the first check)."""
    hysteresis: float | None = Field(None, ge=0.0, lt=1.0)
    """Re-arms once P(Yes) falls below threshold - hysteresis; default min(0.2, threshold / 2)."""
    webhook: str | None = Field(None, min_length=1, max_length=2048)
    """http(s) URL that each firing is POSTed to (the event's JSON); its host goes through the source-host policy."""


class WatchInfo(BaseModel):
    id: str
    object: Literal["watch"] = "watch"
    created: int
    stream_id: str
    condition: str
    interval_s: float
    threshold: float
    hysteresis: float
    webhook: str | None = None
    """Credentials removed."""
    state: Literal["active", "failed"]
    reason: str | None = None
    """Why the watch failed (it is checked no more; the stream and its other watches go on)."""
    checks: int
    """Forwards scored so far (about one per interval_s of stream time)."""
    fired: int
    last_p_yes: float | None = None
    last_checked_t: float | None = None
    """Stream time of the newest check (the end of the newest patch then)."""
    last_checked_at: float | None = None
    """Unix time of the newest check."""
    last_fired_t: float | None = None
    webhook_sent: int = 0
    webhook_failures: int = 0
    webhook_error: str | None = None
    """The newest delivery failure (timeout, refused, a non-2xx status)."""


class WatchList(BaseModel):
    object: Literal["list"] = "list"
    data: list[WatchInfo]


class WatchDeleted(BaseModel):
    id: str
    object: Literal["watch.deleted"] = "watch.deleted"
    deleted: bool = True
