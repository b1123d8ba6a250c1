"""Live load on `longwatch serve`: N real-time streams and M concurrent openai clients for a bounded time.

The server is what a user runs, `python -m longwatch serve --config <generated YAML>` in a subprocess on a
free loopback port. Each stream is a generated H.264 clip played at wall-clock pace (ingest.realtime),
created with POST /v1/streams; each client is the official `openai` client asking about one stream after
another (extra_body stream_id), two questions streamed (TTFT = time to the first content chunk, as a user
sees it) for every one asked whole. A sampler reads GET /v1/streams/{id} of every stream meanwhile (lag,
patches, dropped frames). Nothing here imports the app: the server is only reached over HTTP.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

QUESTIONS = ("What is on screen now?", "What happened 20 seconds ago?", "Describe the last few seconds.",
             "What colours did you see in the first minute?")
STREAMED_OF = 3
"""Of every STREAMED_OF questions a client asks, all but the last are streamed."""


@dataclass
class LiveSettings:
    streams: int
    clients: int
    seconds: float
    max_tokens: int = 16
    think_s: float = 0.5
    """A client's pause between its answer and its next question."""
    sample_s: float = 0.5
    startup_s: float = 180.0
    """Time allowed for the server to load and every stream to encode its first patch."""
    request_timeout_s: float = 300.0


@dataclass
class LiveRun:
    answers: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)
    window: tuple[float, float] = (0.0, 0.0)
    """Monotonic start and end of the measured window (after every stream's first patch)."""
    streams: list[str] = field(default_factory=list)
    health: dict | None = None
    server_exit: int | None = None
    server_stderr_tail: list[str] = field(default_factory=list)
    startup_s: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def error(self, kind: str, detail: str) -> None:
        with self.lock:
            self.errors.append({"t": round(time.monotonic() - self.window[0], 3), "kind": kind, "detail": detail[:300]})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m longwatch serve --config CONFIG` with its stderr in a file; stopped with Ctrl-C."""

    def __init__(self, config: Path, stderr_path: Path) -> None:
        self.cmd = [sys.executable, "-m", "longwatch", "serve", "--config", str(config)]
        self.stderr_path = stderr_path
        self._stderr = open(stderr_path, "w")  # noqa: SIM115 (the process's whole life; stop() closes it)
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=self._stderr,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def wait_healthy(self, base: str, timeout: float) -> dict:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"longwatch serve exited with {self.proc.returncode}: {self.tail(3)}")
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(f"{base}/health", timeout=2)
                if r.status_code == 200:
                    return r.json()
            time.sleep(0.2)
        raise RuntimeError(f"longwatch serve did not answer /health within {timeout:g} s: {self.tail(3)}")

    def tail(self, n: int = 20) -> list[str]:
        if not self._stderr.closed:
            self._stderr.flush()
        return self.stderr_path.read_text(errors="replace").splitlines()[-n:]

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            rc = None
        self._stderr.close()
        return rc


def error_kind(e: BaseException) -> str:
    """An error as a short kind: 'http 429 server_busy', 'timeout', 'connection', or the exception's class."""
    import openai

    if isinstance(e, openai.APIStatusError):
        return f"http {e.status_code} {e.code or ''}".strip()
    if isinstance(e, openai.APITimeoutError):
        return "timeout"
    if isinstance(e, openai.APIConnectionError):
        return "connection"
    return type(e).__name__


def ask(client: Any, model: str, stream_id: str, question: str, streamed: bool, max_tokens: int) -> dict:
    """One question through the openai client; client-side TTFT (streamed only), total time, the server's ttft_s."""
    messages = [{"role": "user", "content": question}]
    t0 = time.perf_counter()
    if not streamed:
        r = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, temperature=0,
                                           extra_body={"stream_id": stream_id})
        lw = (r.model_extra or {}).get("longwatch") or {}
        return {"streamed": False, "ttft_s": None, "total_s": time.perf_counter() - t0,
                "server_ttft_s": lw.get("ttft_s"), "completion_tokens": r.usage.completion_tokens,
                "content": bool(r.choices[0].message.content)}
    first, lw, tokens = None, {}, None
    chunks = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, temperature=0,
                                            stream=True, stream_options={"include_usage": True},
                                            extra_body={"stream_id": stream_id})
    for ch in chunks:
        if ch.choices:
            delta = ch.choices[0].delta
            if first is None and (delta.content or (delta.model_extra or {}).get("reasoning_content")):
                first = time.perf_counter() - t0
            lw = (ch.model_extra or {}).get("longwatch") or lw
        if ch.usage is not None:
            tokens = ch.usage.completion_tokens
    return {"streamed": True, "ttft_s": first, "total_s": time.perf_counter() - t0,
            "server_ttft_s": lw.get("ttft_s"), "completion_tokens": tokens, "content": first is not None}


def client_loop(k: int, base: str, model: str, run: LiveRun, s: LiveSettings, stop_at: float) -> None:
    """Client k: round-robin over the streams (starting at stream k), questions in turn, until stop_at."""
    from openai import OpenAI

    client = OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=s.request_timeout_s)
    order = itertools.cycle(range(len(run.streams)))
    for _ in range(k % len(run.streams)):
        next(order)
    for j in itertools.count():
        if time.monotonic() >= stop_at:
            return
        sid = run.streams[next(order)]
        question = QUESTIONS[(k + j) % len(QUESTIONS)]
        streamed = j % STREAMED_OF != STREAMED_OF - 1
        t = time.monotonic() - run.window[0]
        try:
            row = ask(client, model, sid, question, streamed, s.max_tokens)
        except Exception as e:  # noqa: BLE001 (every failure is counted by kind; the client goes on)
            run.error(error_kind(e), f"client {k} stream {sid}: {e}")
        else:
            with run.lock:
                run.answers.append({"client": k, "stream": sid, "t": round(t, 3), **row})
        time.sleep(s.think_s)


def sample_loop(base: str, run: LiveRun, s: LiveSettings, done: threading.Event) -> None:
    """Every sample_s: each stream's GET /v1/streams/{id} (lag, encoded_up_to, patches, dropped frames, state)."""
    import httpx

    with httpx.Client(base_url=base, timeout=10) as http:
        while not done.is_set():
            t = time.monotonic()
            for sid in run.streams:
                try:
                    r = http.get(f"/v1/streams/{sid}")
                    r.raise_for_status()
                    info = r.json()
                except Exception as e:  # noqa: BLE001
                    run.error(f"sampler {type(e).__name__}", f"GET /v1/streams/{sid}: {e}")
                    continue
                with run.lock:
                    run.samples.append({"t": t, "stream": sid, **{k: info.get(k) for k in (
                        "state", "lag_s", "encoded_up_to", "patches", "dropped_frames", "gaps", "reconnects", "rate")}})
            done.wait(max(0.0, s.sample_s - (time.monotonic() - t)))


def run_live(config: Path, video: Path, base: str, s: LiveSettings, stderr_path: Path) -> LiveRun:
    """Start the server, create the streams, run the clients and the sampler for s.seconds, stop everything."""
    import httpx

    run = LiveRun()
    t_start = time.monotonic()
    server = ServerProcess(config, stderr_path)
    try:
        server.wait_healthy(base, s.startup_s)
        model = httpx.get(f"{base}/v1/models", timeout=10).json()["data"][0]["id"]
        for i in range(s.streams):
            r = httpx.post(f"{base}/v1/streams", json={"source": video.as_uri(), "name": f"bench-{i}"}, timeout=30)
            if r.status_code != 201:
                raise RuntimeError(f"POST /v1/streams: {r.status_code} {r.text[:300]}")
            run.streams.append(r.json()["id"])
        _wait_first_patches(base, run.streams, t_start + s.startup_s)
        run.startup_s = time.monotonic() - t_start
        t0 = time.monotonic()
        run.window = (t0, t0 + s.seconds)
        done = threading.Event()
        sampler = threading.Thread(target=sample_loop, args=(base, run, s, done), daemon=True)
        sampler.start()
        clients = [threading.Thread(target=client_loop, args=(k, base, model, run, s, run.window[1]), daemon=True)
                   for k in range(s.clients)]
        for c in clients:
            c.start()
        time.sleep(max(0.0, run.window[1] - time.monotonic()))
        done.set()
        sampler.join(15)
        for c in clients:  # a question asked before the end is let finish
            c.join(s.request_timeout_s)
        run.health = httpx.get(f"{base}/health", timeout=10).json()
        for sid in run.streams:
            with contextlib.suppress(httpx.HTTPError):
                httpx.delete(f"{base}/v1/streams/{sid}", timeout=30)
    finally:
        run.server_exit = server.stop()
        run.server_stderr_tail = server.tail(20)
    tracebacks = sum(line.startswith("Traceback") for line in stderr_path.read_text(errors="replace").splitlines())
    for _ in range(tracebacks):
        run.error("server traceback", "a Traceback in the server's stderr (see server_stderr_tail)")
    return run


def _wait_first_patches(base: str, streams: list[str], deadline: float) -> None:
    import httpx

    waiting = set(streams)
    while waiting:
        for sid in list(waiting):
            info = httpx.get(f"{base}/v1/streams/{sid}", timeout=10).json()
            if info["state"] == "failed":
                raise RuntimeError(f"stream {sid} failed: {info.get('reason')}")
            if info["patches"] > 0:
                waiting.discard(sid)
        if waiting and time.monotonic() > deadline:
            raise RuntimeError(f"{len(waiting)} streams had no patch within the startup time")
        time.sleep(0.2)


def pct(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation; None for no values."""
    v = sorted(values)
    if not v:
        return None
    k = (len(v) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


def summarise(run: LiveRun, s: LiveSettings, fps: float) -> dict:
    """The live figures: aggregate encoded frames/s, lag per stream, TTFT, answers and errors by kind."""
    t0, t1 = run.window
    per_stream, frames_per_s = {}, 0.0
    for sid in run.streams:
        rows = [r for r in run.samples if r["stream"] == sid and t0 <= r["t"] <= t1 + s.sample_s]
        lags = [r["lag_s"] for r in rows if r["lag_s"] is not None]
        rate = 0.0
        if len(rows) >= 2 and rows[-1]["t"] > rows[0]["t"]:
            rate = 2 * (rows[-1]["patches"] - rows[0]["patches"]) / (rows[-1]["t"] - rows[0]["t"])
        frames_per_s += rate
        states = Counter(r["state"] for r in rows)
        per_stream[sid] = {"samples": len(rows), "frames_per_s": _r(rate), "lag_s_p50": _r(pct(lags, 50)),
                           "lag_s_p95": _r(pct(lags, 95)), "lag_s_max": _r(max(lags, default=None)),
                           "patches": rows[-1]["patches"] if rows else 0,
                           "dropped_frames": rows[-1]["dropped_frames"] if rows else None, "states": dict(states)}
    lags = [r["lag_s"] for r in run.samples if t0 <= r["t"] <= t1 + s.sample_s and r["lag_s"] is not None]
    ttft = [a["ttft_s"] for a in run.answers if a["ttft_s"] is not None]
    server_ttft = [a["server_ttft_s"] for a in run.answers if a["server_ttft_s"] is not None]
    total = [a["total_s"] for a in run.answers]
    errors = Counter(e["kind"] for e in run.errors)
    stopped = sum(bool(p["states"].get("failed") or p["states"].get("ended")) for p in per_stream.values())
    if stopped:  # a stream that failed or ended during the run (the clip outlasts it)
        errors["stream stopped"] = stopped
    return {
        "streams": s.streams, "clients": s.clients, "seconds": s.seconds, "startup_s": _r(run.startup_s),
        "frames_per_s": _r(frames_per_s), "real_time_frames_per_s": s.streams * fps,
        "keeps_up": frames_per_s >= 0.95 * s.streams * fps,
        "lag_s_p50": _r(pct(lags, 50)), "lag_s_p95": _r(pct(lags, 95)), "lag_s_max": _r(max(lags, default=None)),
        "dropped_frames": sum(p["dropped_frames"] or 0 for p in per_stream.values()),
        "answers": len(run.answers), "answers_streamed": sum(a["streamed"] for a in run.answers),
        "answers_without_content": sum(not a["content"] for a in run.answers),
        "ttft_s_p50": _r(pct(ttft, 50)), "ttft_s_p95": _r(pct(ttft, 95)), "ttft_s_max": _r(max(ttft, default=None)),
        "server_ttft_s_p50": _r(pct(server_ttft, 50)), "server_ttft_s_p95": _r(pct(server_ttft, 95)),
        "answer_s_p50": _r(pct(total, 50)), "answer_s_p95": _r(pct(total, 95)),
        "answers_per_min": _r(len(run.answers) / (s.seconds / 60), 2),
        "errors": sum(errors.values()), "errors_by_kind": dict(errors),
        "per_stream": per_stream,
        "mean_answer_tokens": _r(statistics.mean([a["completion_tokens"] or 0 for a in run.answers]), 2)
        if run.answers else None,
    }
