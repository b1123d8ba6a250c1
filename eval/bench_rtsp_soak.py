"""RTSP soak: a real GStreamer RTSP server killed (SIGKILL) and restarted N times under one `longwatch ingest`.

    longwatch bench rtsp-soak                                  # 20 restarts: 3 s streaming, 1 s dead
    longwatch bench rtsp-soak --restarts 50 --down-s 2 --out eval/results/rtsp_soak

The camera is eval/rtsp_server.py (GstRtspServer on Debian's python3, a generated 160x120 H.264 clip in
real time); the client is what a user runs, `python -m longwatch ingest URL --json` in a subprocess with
the default config (or --config), each line it prints stamped on arrival. Per restart: kill -> the
first patch of the new connection (the outage), server back -> that patch, the gap the patch records.

Targets, each named when missed (exit 1): every restart resumed within --within-s of its kill; every
outage recorded as a gap (covering the time the server was gone) before the resuming patch; every
frame time strictly increasing and patch indexes without holes; no crash (ingest alive until told to
stop, no traceback or failed state, exit 130 on Ctrl-C). Impossible settings fail at start with one
line naming the setting (exit 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from longwatch.eval import rtsp_peer
from longwatch.ingest.config import IngestConfig

Event = tuple[float, dict]
"""(time.monotonic() on arrival, one JSON line of `longwatch ingest --json`)."""
RESUME_GRACE_S = 30.0
"""How long past --within-s a restart is still waited for, so a late resume is measured, not just missed."""
CLIP_SIZE, CLIP_FPS = (120, 160), 15


class SettingsError(ValueError):
    """A setting the soak cannot run with; printed as one line by the CLI, exit status 2."""

    user_facing = True


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--restarts", type=int, default=20, help="server kills and restarts (default 20)")
    p.add_argument("--up-s", type=float, default=3.0,
                   help="seconds the stream runs after each resume before the next kill (default 3)")
    p.add_argument("--down-s", type=float, default=1.0, help="seconds the server stays dead after a kill (default 1)")
    p.add_argument("--within-s", type=float, default=5.0,
                   help="target: a patch of the new connection within S seconds of every kill (default 5)")
    p.add_argument("--startup-s", type=float, default=60.0, help="time allowed for the first patch (default 60)")
    p.add_argument("--port", type=int, default=0, help="loopback port of the server (default: a free one)")
    p.add_argument("--video", type=Path, help="H.264 MP4 to stream (default: a generated clip)")
    p.add_argument("--config", help="YAML config for the ingest command (default: the packaged one)")
    p.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "longwatch" / "bench",
                   help="where the generated clip is kept between runs")
    p.add_argument("--out", type=Path, help="results folder (default ./runs)")
    p.add_argument("--name", help="result name (default rtsp_soak_<restarts>x)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def check_settings(args: argparse.Namespace) -> IngestConfig:
    """The ingest settings the command will run with; SettingsError (or ConfigError, naming the key) for
    a run that cannot meet its targets or cannot start."""
    from longwatch.eval.config import load_config

    if args.restarts < 1:
        raise SettingsError(f"--restarts must be >= 1, got {args.restarts}")
    for flag in ("up_s", "down_s", "within_s", "startup_s"):
        if not getattr(args, flag) > 0:
            raise SettingsError(f"--{flag.replace('_', '-')} must be > 0 seconds, got {getattr(args, flag)}")
    if args.down_s >= args.within_s:
        raise SettingsError(f"--down-s {args.down_s:g} is not below --within-s {args.within_s:g}: the server would "
                            "still be dead when the resume target runs out")
    if not 0 <= args.port <= 65535:
        raise SettingsError(f"--port must be in [0, 65535], got {args.port}")
    if args.video is not None:
        from longwatch.ingest.sources import probe

        if not args.video.is_file():
            raise SettingsError(f"--video {args.video}: no such file")
        need = args.up_s + args.within_s + 5
        if (probe(str(args.video)).duration_s or 0.0) < need:
            raise SettingsError(f"--video {args.video} is shorter than {need:g} s (--up-s + --within-s + 5): "
                                "the server would end the stream itself before the next kill")
    ingest_cfg = load_config(args.config).ingest
    missing = rtsp_peer.missing()
    if missing:
        raise SettingsError(f"the RTSP server cannot run here: missing Debian package {missing} "
                            "(as root: bash .ci/install-system-deps.sh)")
    return ingest_cfg


class IngestProcess:
    """`longwatch ingest URL --json` in a subprocess; every stdout line parsed and stamped on arrival."""

    def __init__(self, url: str, config: str | None, stderr_path: Path) -> None:
        flags = ["--config", config] if config else []
        self.cmd = [sys.executable, "-m", "longwatch", "ingest", url, "--json", *flags]
        self.events: list[Event] = []
        self._cond = threading.Condition()
        self._stderr = open(stderr_path, "w")  # noqa: SIM115 (the process's whole life; stop() closes it)
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=self._stderr, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = {"type": "text", "line": line.rstrip()}
            with self._cond:
                self.events.append((time.monotonic(), record))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait(self, done, timeout: float) -> bool:
        """Wait until done(events) is true (True) or the process exits or `timeout` passes (False)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not done(self.events):
                left = deadline - time.monotonic()
                if left <= 0 or not self.alive:
                    return done(self.events)
                self._cond.wait(min(left, 0.2))
            return True

    def stop(self, timeout: float = 15.0) -> tuple[int | None, float]:
        """Ctrl-C, as a user stops it; returns (exit status or None if it hung, seconds to exit)."""
        t0 = time.monotonic()
        if self.alive:
            self.proc.send_signal(signal.SIGINT)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            rc = None
        self._reader.join(5)
        self._stderr.close()
        return rc, time.monotonic() - t0


def first_resume(events: list[Event], since: float) -> int | None:
    """Index of the first patch after a "streaming" state that arrived after `since`: the new connection's."""
    streaming = False
    for i, (t, r) in enumerate(events):
        if t < since:
            continue
        if r.get("type") == "state" and r.get("state") == "streaming":
            streaming = True
        elif r.get("type") == "patch" and streaming:
            return i
    return None


def outage(events: list[Event], kill_t: float, back_t: float, within_s: float, period: float) -> dict:
    """Figures of one restart: detection, reconnect attempts, outage (kill -> patch), the gap recorded.

    The gap counts as recorded when the resuming patch's gap_before covers the time the server was gone,
    less one sampling period (the last patch before the kill ends a period after its second frame).
    """
    i = first_resume(events, kill_t)
    end = events[i][0] if i is not None else float("inf")
    states = [(t, r) for t, r in events if kill_t <= t <= end and r.get("type") == "state"]
    detected = next((t for t, r in states if r["state"] == "reconnecting"), None)
    out = {"server_down_s": round(back_t - kill_t, 3),
           "detected_s": round(detected - kill_t, 3) if detected is not None else None,
           "reconnect_attempts": sum(r["state"] == "reconnecting" for _, r in states),
           "resumed": i is not None, "outage_s": None, "after_server_s": None, "gap_before_s": None}
    if i is not None:
        t, patch = events[i]
        out.update(outage_s=round(t - kill_t, 3), after_server_s=round(t - back_t, 3), patch=patch["index"],
                   gap_before_s=patch["gap_before"])
    out["within_target"] = out["resumed"] and out["outage_s"] <= within_s
    out["gap_recorded"] = out["resumed"] and out["gap_before_s"] >= out["server_down_s"] - period
    return out


def timeline(patches: list[dict], period: float) -> dict:
    """Every frame time strictly increasing across the whole run, reconnects included; indexes 0..n-1.

    A patch's two frame times are t_start and t_end - period (t_end is the second frame plus one period).
    """
    times = [t for p in patches for t in (p["t_start"], round(p["t_end"] - period, 3))]
    backwards = sum(b <= a for a, b in zip(times, times[1:]))
    holes = sum(p["index"] != i for i, p in enumerate(patches))
    return {"patches": len(patches), "monotonic": not backwards and not holes,
            "backwards_steps": backwards, "index_holes": holes}


def crashes(events: list[Event], stderr: str, died_early: bool, exit_rc: int | None) -> dict:
    """Everything that counts as a crash: early death, internal errors, failed states, an unclean Ctrl-C."""
    crash_lines = [ln for ln in stderr.splitlines() if ln.startswith("Traceback")]  # one per crash logged
    failed = [r.get("reason") for _, r in events if r.get("type") == "state" and r.get("state") == "failed"]
    unclean = exit_rc != 130
    return {"count": int(died_early) + len(crash_lines) + len(failed) + int(unclean and not died_early),
            "died_early": died_early, "tracebacks": len(crash_lines), "failed_states": failed[:5],
            "exit_status": exit_rc}


def summarise(outages: list[dict], tl: dict, crash: dict, events: list[Event], args: argparse.Namespace) -> dict:
    done = [o for o in outages if o["resumed"]]
    times = [o["outage_s"] for o in done]
    patches = [r for _, r in events if r.get("type") == "patch"]
    return {"restarts": args.restarts, "resumed": len(done), "resumed_within": sum(o["within_target"] for o in outages),
            "outage_s_median": round(statistics.median(times), 3) if times else None,
            "outage_s_max": max(times, default=None),
            "after_server_s_max": max((o["after_server_s"] for o in done), default=None),
            "gaps_recorded": sum(o["gap_recorded"] for o in outages),
            "gaps_in_stream": sum(1 for p in patches if p["gap_before"] > 0),
            "gap_before_s_min": min((o["gap_before_s"] for o in done), default=None),
            "monotonic": tl["monotonic"], "patches": tl["patches"], "crashes": crash["count"],
            "reconnect_attempts": sum(o["reconnect_attempts"] for o in outages)}


def report_line(o: dict) -> str:
    if not o["resumed"]:
        return (f"restart {o['restart']:3d}: NOT resumed ({o['reconnect_attempts']} reconnect attempts; "
                f"server was back after {o['server_down_s']} s)")
    return (f"restart {o['restart']:3d}: outage {o['outage_s']:.2f} s (server back -> patch "
            f"{o['after_server_s']:.2f} s, {o['reconnect_attempts']} reconnect attempts), "
            f"gap recorded {o['gap_before_s']:.2f} s")


def failures(s: dict, args: argparse.Namespace) -> list[str]:
    within_s = args.within_s
    out = [] if s["started"] else [f"the stream never started: no patch within --startup-s {args.startup_s:g} s"]
    if s["resumed_within"] < s["restarts"]:
        out.append(f"resumed within {within_s:g} s: {s['resumed_within']} of {s['restarts']} "
                   f"(resumed at all: {s['resumed']}; longest outage {s['outage_s_max']} s)")
    if s["gaps_recorded"] < s["restarts"]:
        out.append(f"gaps recorded (covering the time the server was gone): {s['gaps_recorded']} of "
                   f"{s['restarts']} outages")
    if not s["monotonic"]:
        out.append(f"timestamps not monotonic over {s['patches']} patches")
    if s["crashes"]:
        out.append(f"crashes: {s['crashes']}")
    return out


def clip(args: argparse.Namespace) -> tuple[Path, float]:
    """The video the server streams: --video, or a generated one that outlasts every connection."""
    from longwatch.ingest.sources import probe

    if args.video is not None:  # long enough: check_settings saw to it
        return args.video, probe(str(args.video)).duration_s or 0.0
    from longwatch.eval.bench_decode import make_test_video

    seconds = max(120, round(4 * (args.up_s + args.within_s + RESUME_GRACE_S)))
    h, w = CLIP_SIZE
    path = args.cache_dir / f"rtsp_soak_{seconds}s_{w}x{h}.mp4"
    return make_test_video(path, seconds / 60, size=CLIP_SIZE, rate=CLIP_FPS), float(seconds)


def soak(args: argparse.Namespace, ingest_cfg: IngestConfig, video: Path, stderr_path: Path) -> dict:
    """Start the server and the ingest, kill and restart the server args.restarts times, measure."""
    server = rtsp_peer.RtspServer(video, args.port or None)
    server.start()
    ingest = IngestProcess(server.url, args.config, stderr_path)
    outages, died_early = [], False
    try:
        started = ingest.wait(lambda ev: any(r.get("type") == "patch" for _, r in ev), args.startup_s)
        for n in range(1, args.restarts + 1 if started else 1):
            ingest.wait(lambda ev: False, args.up_s)  # the stream runs; returns early if the ingest dies
            if not ingest.alive:
                died_early = True
                break
            kill_t = time.monotonic()
            server.kill()
            time.sleep(args.down_s)
            server.start()
            back_t = time.monotonic()
            ingest.wait(lambda ev: first_resume(ev, kill_t) is not None,
                        kill_t + args.within_s + RESUME_GRACE_S - time.monotonic())
            o = {"restart": n, **outage(ingest.events, kill_t, back_t, args.within_s, 1.0 / ingest_cfg.fps)}
            outages.append(o)
            if not args.json:
                print(report_line(o), flush=True)
            if not ingest.alive:
                died_early = True
                break
        died_early = died_early or not ingest.alive
    finally:
        rc, stop_s = ingest.stop()
        server.kill()
    events = ingest.events
    tl = timeline([r for _, r in events if r.get("type") == "patch"], 1.0 / ingest_cfg.fps)
    crash = crashes(events, stderr_path.read_text(errors="replace"), died_early, rc)
    t0 = events[0][0] if events else 0.0
    patches = [[round(t - t0, 3), r["index"], r["t_start"], r["t_end"], r["gap_before"]]
               for t, r in events if r.get("type") == "patch"]
    return {"ingest_command": ingest.cmd, "outages": outages, "timeline": tl, "crash": crash,
            "patches": {"columns": ["arrived_s", "index", "t_start", "t_end", "gap_before"], "rows": patches},
            "stop_s": round(stop_s, 3), "summary": {"started": started, **summarise(outages, tl, crash, events, args)},
            "ingest_stderr_tail": stderr_path.read_text(errors="replace").splitlines()[-20:]}


def main(args: argparse.Namespace) -> int:
    from longwatch.eval.environment import results_dir, save_result

    ingest_cfg = check_settings(args)
    folder = results_dir(args.out)
    video, video_s = clip(args)
    with tempfile.TemporaryDirectory(prefix="longwatch-rtsp-soak-") as tmp:
        result = soak(args, ingest_cfg, video, Path(tmp) / "ingest.stderr")
    s = result["summary"]
    failed = failures(s, args)
    settings = {k: getattr(args, k) for k in ("restarts", "up_s", "down_s", "within_s", "startup_s", "config")}
    targets = {"resumed_within_s": args.within_s, "resumed": args.restarts, "gaps_recorded": args.restarts,
               "monotonic": True, "crashes": 0}
    path = save_result(args.name or f"rtsp_soak_{args.restarts}x",
                       {"settings": {**settings, "video": str(video), "video_s": video_s},
                        "ingest_config": dataclasses.asdict(ingest_cfg), "targets": targets,
                        **result, "failures": failed, "passed": not failed}, folder)
    if args.json:
        print(json.dumps({"summary": s, "failures": failed, "saved": str(path)}))
    else:
        print(f"resumed {s['resumed_within']} of {s['restarts']} within {args.within_s:g} s "
              f"(outage kill -> next patch: median {s['outage_s_median']} s, max {s['outage_s_max']} s; "
              f"server back -> patch max {s['after_server_s_max']} s; {s['reconnect_attempts']} reconnect attempts)")
        print(f"gaps recorded {s['gaps_recorded']} of {s['restarts']} (smallest {s['gap_before_s_min']} s); "
              f"{s['gaps_in_stream']} gaps in {s['patches']} patches")
        print(f"timestamps monotonic: {'yes' if s['monotonic'] else 'NO'}; crashes {s['crashes']} "
              f"(exit {result['crash']['exit_status']} on Ctrl-C after {result['stop_s']} s)")
        print(f"saved {path}")
    for line in failed:
        print(f"rtsp-soak: target missed: {line}", file=sys.stderr)
    return 1 if failed else 0
