"""The `serve` config section: address, limits and the security policy of `longwatch serve`."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

REASONING_PARSERS = ("auto", "qwen3", "none")


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    """Address to bind; loopback unless told otherwise (a non-loopback address needs API keys)."""
    port: int = 8000
    """Port to listen on."""
    ui: bool = False
    """Also mount the Gradio page at /ui in the same app."""
    served_model_name: str = ""
    """The model id /v1/models lists and requests name; empty = the loaded model's name."""
    api_key_file: str = ""
    """File with one API key per line (# comments); keys in $LONGWATCH_API_KEYS (comma-separated) count too."""
    allow_no_auth: bool = False
    """Serve a non-loopback address without API keys (refused at start otherwise)."""
    allowed_local_media_path: str = ""
    """Folder whose files (file:// URLs) requests may name; empty = no local files at all."""
    allowed_source_hosts: tuple[str, ...] = ()
    """Hosts, addresses or networks (10.0.0.0/8) that camera URLs may name although they are loopback,
    link-local or private (refused otherwise: server-side request forgery)."""
    allowed_schemes: tuple[str, ...] = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https")
    """URL schemes a request may name for a video or a stream."""
    max_streams: int = 8
    """Streams and chat videos held in memory at once; one more is 429 (an idle chat video is freed first)."""
    max_pending: int = 16
    """Chat completions running or waiting for the model at once; one more is 429."""
    max_request_kb: int = 1024
    """Largest request body; a larger one is 413."""
    request_timeout_s: float = 300.0
    """A chat completion may wait this long for its video to be encoded and for the model; then 408."""
    video_idle_s: float = 900.0
    """A chat video unused for this long is freed (and any idle one first when max_streams is reached)."""
    max_tokens: int = 2048
    """Largest max_tokens a request may ask for (bounded memories cap it further: memory.answer_tokens)."""
    max_fps: float = 4.0
    """Largest fps a stream may ask for."""
    reasoning_parser: str = "auto"
    """auto (qwen3 when the model's name says Thinking), qwen3 (<think>...</think> -> reasoning_content), none."""
    max_watches: int = 8
    """Watches per stream (each costs one short forward per interval); one more is 429."""
    memory_dir: str = ""
    """Folder where every API stream journals its memory (memory_dir/<id>/) and the server lists its streams
    and watches (memory_dir/streams.jsonl, mode 0600: it holds camera URLs); a restarted server reopens them,
    memory from the journal, sources reconnected. Empty: memory lives as long as the process."""
    batch_streams: bool = True
    """Encode the waiting patches of all streams in one batched forward per step (memory.multistream);
    false: each stream encodes alone, still one forward at a time. FA2 models encode alone either way."""
    ray: str = ""
    """Scale out on Ray (app/serve/cluster.py): "" = one process; "auto" = join the Ray cluster of this
    machine or start a local one; an address (HOST:PORT of a cluster's head, or ray://HOST:PORT) joins it.
    This process is then the front door and worker actors hold the models and the streams."""
    ray_workers: int = 0
    """Worker actors (each one model and up to max_streams streams); 0 = one per GPU of the cluster, or one
    per node when it has none."""
    ray_worker_cpus: float = 1.0
    """CPUs each worker reserves (Ray resource num_cpus)."""
    ray_worker_gpus: float = 1.0
    """GPUs each worker reserves when the cluster has GPUs (num_gpus; 1 = a GPU of its own)."""
    ray_worker_memory: int = field(default=0, metadata={"bytes": True})
    """Memory budget of one worker: the device budgets of its streams must fit in it (a stream that fits
    nowhere is 429); 0 = only max_streams counts."""
    ray_max_restarts: int = 10
    """How often Ray restarts a worker that died (its streams reopen from serve.memory_dir); then it is gone."""
    ray_connect_timeout_s: float = 15.0
    """Longest wait for the cluster at --ray ADDRESS, and for a restarting worker on a request's path."""

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port: must be in 1..65535, got {self.port}")
        for name in ("max_streams", "max_pending", "max_request_kb", "max_tokens", "max_watches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.ray_workers < 0 or self.ray_worker_cpus < 0 or self.ray_worker_gpus < 0 or self.ray_max_restarts < 0:
            raise ValueError("ray_workers, ray_worker_cpus, ray_worker_gpus and ray_max_restarts must be >= 0")
        for name in ("request_timeout_s", "video_idle_s", "max_fps", "ray_connect_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.reasoning_parser not in REASONING_PARSERS:
            raise ValueError(f"reasoning_parser: {self.reasoning_parser!r} is not one of {', '.join(REASONING_PARSERS)}")
        bad = [s for s in self.allowed_schemes if s in ("file", "") or not s.isalnum()]
        if bad:
            raise ValueError(f"allowed_schemes: {bad[0]!r} may not be allowed (local files: allowed_local_media_path)")
        for entry in self.allowed_source_hosts:
            if "/" in entry:
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise ValueError(f"allowed_source_hosts: {entry!r} is not a network (e.g. 10.0.0.0/8)") from None
            elif not entry.strip():
                raise ValueError("allowed_source_hosts: empty entry")
