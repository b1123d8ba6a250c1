"""Serve benchmark: live streams and concurrent openai clients on `longwatch serve`, then stateful vs stateless TTFT.

    longwatch bench serve --model tiny --streams 2 --clients 2 --seconds 120 --minutes 1,10,30 \\
        --out eval/results/serve

Part 1, live (eval/serve_load.py): `longwatch serve` in a subprocess on a free loopback port with this
run's config (ingest.realtime on), N streams of a generated H.264 clip played at wall-clock pace (POST
/v1/streams), M threads of the official `openai` client asking about them for S seconds (two of three
questions streamed: TTFT is the time to the first content chunk; every third asked whole), every stream's
GET /v1/streams/{id} sampled meanwhile. Figures: aggregate encoded frames/s (sum over streams, 2 frames a
patch), lag p50/p95/max per stream and over all, TTFT p50/p95, answers, errors by kind (target 0).

Part 2, per question at each --minutes length (eval/stateless.py), in this process on the same backbone, no
HTTP: stateful = a MemoryStream with the config's policy (the server's default) that ingested the video
as it arrived; stateless = an EMULATION of how vLLM's and SGLang's OpenAI-compatible servers take video
today, every question re-sending the whole video so far into a fresh cache (exact chunked prefill). TTFT,
forward seconds, tokens prefilled and FLOPs per question, and the ratio. Target: stateless TTFT at least
20x the stateful one at 30 minutes. An encode past --stateless-limit-s stops and reports how far it got.

The load average at the start of each part is saved: the figures are wall-clock on a possibly shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from longwatch.eval.flags import add_config_flags

CLIP_SIZE, CLIP_FPS = (240, 320), 10
"""The generated camera: 320x240 at 10 frames/s; at --frame-size 224 it is encoded at 256x192."""
TARGET_RATIO, TARGET_MINUTES, TARGET_ERRORS = 20.0, 30.0, 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--streams", type=int, default=2, help="live streams (default 2)")
    p.add_argument("--clients", type=int, default=2, help="concurrent openai clients (default 2)")
    p.add_argument("--seconds", type=float, default=60.0, help="measured live time, after every stream's first "
                   "patch (default 60)")
    p.add_argument("--minutes", default="1,10,30",
                   help="video lengths for stateful vs stateless, comma-separated; empty skips part 2 (default 1,10,30)")
    p.add_argument("--max-tokens", type=int, default=16, help="max_tokens per live question (default 16)")
    p.add_argument("--think-s", type=float, default=0.5, help="a client's pause between questions (default 0.5)")
    p.add_argument("--chunk-tokens", type=int, default=512,
                   help="stateless emulation: tokens per prefill chunk, whole patches (default 512)")
    p.add_argument("--stateless-limit-s", type=float, default=600.0,
                   help="stop a stateless encode past this many seconds and report how far it got (default 600)")
    p.add_argument("--threads", type=int, help="torch CPU threads, here and in the server (OMP_NUM_THREADS); "
                   "default: torch's own. On a shared CPU machine 1 avoids threads spinning against other work")
    p.add_argument("--ray", metavar="N[,N...]", default="",
                   help="also run part 1 on `serve --ray` with each number of worker actors on a local Ray cluster "
                        "(e.g. 1,2,3), beside the single-process run; needs the ray extra")
    p.add_argument("--skip-live", action="store_true", help="run part 2 only")
    p.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "longwatch" / "bench",
                   help="where the generated clip is kept between runs")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--out", metavar="DIR", help="results folder (default ./runs)")
    p.add_argument("--name", help="result name (default serve_<model>_<streams>x<clients>)")
    add_config_flags(p)
    p.set_defaults(**{"model.name": "tiny", "ingest.frame_size": "224"})


def _minutes(text: str) -> list[float]:
    try:
        out = sorted({float(m) for m in text.split(",") if m.strip()})
    except ValueError:
        raise SettingsError(f"--minutes: comma-separated numbers, got {text!r}") from None
    if any(m <= 0 for m in out):
        raise SettingsError(f"--minutes: lengths must be > 0, got {text!r}")
    return out


class SettingsError(ValueError):
    """A setting the bench cannot run with; printed as one line by the CLI, exit status 2."""

    user_facing = True


def check_settings(args: argparse.Namespace) -> list[float]:
    for flag in ("streams", "clients", "max_tokens", "chunk_tokens"):
        if getattr(args, flag) < 1:
            raise SettingsError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.threads is not None and args.threads < 1:
        raise SettingsError(f"--threads must be >= 1, got {args.threads}")
    for flag in ("seconds", "stateless_limit_s"):
        if not getattr(args, flag) > 0:
            raise SettingsError(f"--{flag.replace('_', '-')} must be > 0, got {getattr(args, flag)}")
    if args.think_s < 0:
        raise SettingsError(f"--think-s must be >= 0, got {args.think_s}")
    return _minutes(args.minutes)


def _workers(text: str) -> list[int]:
    try:
        out = [int(n) for n in text.split(",") if n.strip()]
    except ValueError:
        raise SettingsError(f"--ray: comma-separated worker counts, got {text!r}") from None
    if any(n < 1 for n in out):
        raise SettingsError(f"--ray: worker counts must be >= 1, got {text!r}")
    return out


def server_config(args: argparse.Namespace, folder: Path, media: Path, port: int,
                  extra: dict | None = None) -> tuple[Path, dict]:
    """The YAML `longwatch serve` runs with: --config (default: the packaged file) plus this run's flags, files
    played live, the clip's folder allowed, room for every stream and client."""
    import yaml

    from longwatch.eval.config import default_config_text

    text = Path(args.config).read_text(encoding="utf-8") if args.config else default_config_text()
    data = yaml.safe_load(text) or {}
    overrides = {k: v for k, v in vars(args).items() if "." in k and v is not None}
    overrides.update({"ingest.realtime": True, "serve.host": "127.0.0.1", "serve.port": port,
                      "serve.allowed_local_media_path": str(media), "serve.max_streams": max(8, args.streams),
                      "serve.max_pending": max(16, 2 * args.clients), **(extra or {})})
    for key, value in overrides.items():
        section, name = key.split(".", 1)
        data.setdefault(section, {})[name] = value
    path = folder / "serve.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, data


def live(args: argparse.Namespace, cfg, extra: dict | None = None) -> dict:
    """Part 1 against one server; `extra` config keys change it (serve.ray: the Ray front door)."""
    from longwatch.eval.bench_decode import make_test_video
    from longwatch.eval.serve_load import LiveSettings, free_port, run_live, summarise

    s = LiveSettings(streams=args.streams, clients=args.clients, seconds=args.seconds, max_tokens=args.max_tokens,
                     think_s=args.think_s)
    clip_s = int(args.seconds + s.startup_s + 60)  # outlasts startup and the run: no stream ends during it
    h, w = CLIP_SIZE
    video = make_test_video(args.cache_dir / f"serve_{clip_s}s_{w}x{h}_{CLIP_FPS}fps.mp4", clip_s / 60,
                            size=CLIP_SIZE, rate=CLIP_FPS)
    with tempfile.TemporaryDirectory(prefix="longwatch-bench-serve-") as tmp:
        port = free_port()
        config, data = server_config(args, Path(tmp), video.parent, port, extra)
        run = run_live(config, video, f"http://127.0.0.1:{port}", s, Path(tmp) / "serve.stderr")
    summary = summarise(run, s, cfg.ingest.fps)
    t0 = run.window[0]
    return {"summary": summary, "server_command": ["python", "-m", "longwatch", "serve", "--config", "<serve.yaml>"],
            "server_config": data, "video": {"path": str(video), "seconds": clip_s, "size": list(CLIP_SIZE),
                                             "fps": CLIP_FPS},
            "settings": vars(s), "health_at_end": run.health, "server_exit": run.server_exit,
            "server_stderr_tail": run.server_stderr_tail, "errors": run.errors,
            "answers": run.answers,
            "samples": {"columns": ["t", "stream", "state", "lag_s", "encoded_up_to", "patches", "dropped_frames"],
                        "rows": [[round(r["t"] - t0, 3), r["stream"], r["state"], r["lag_s"], r["encoded_up_to"],
                                  r["patches"], r["dropped_frames"]] for r in run.samples]}}


def compare(args: argparse.Namespace, cfg, lengths: list[float]) -> dict:
    """Part 2: stateful and emulated stateless TTFT per question at each length, on one backbone."""
    import itertools

    from longwatch.backbone.model import Backbone
    from longwatch.eval.stateless import LABEL, QUESTION, check_exact, stateful_questions, stateless_question
    from longwatch.eval.synthetic import synthetic_patches

    bb = Backbone.load(cfg.model.greedy())  # greedy whatever the checkpoint's defaults

    def video(minutes: float):
        return synthetic_patches(minutes, cfg.ingest.fps, cfg.ingest.frame_size, source_hw=CLIP_SIZE)

    warm = list(itertools.islice(video(1), 6))  # first calls allocate and dispatch slowly
    exact = check_exact(bb, cfg.memory, warm, args.chunk_tokens)
    load = {"stateful": os.getloadavg()[0]}
    stateful, ingest = stateful_questions(bb, cfg.memory, video(max(lengths)), lengths)
    load["stateless"] = os.getloadavg()[0]
    stateless, stopped = [], None
    for m in lengths:
        if stopped:
            stateless.append({"minutes": m, "complete": False, "skipped": f"not run: {stopped}", "ttft_s": None})
            continue
        row = stateless_question(bb, video(m), m, args.chunk_tokens, args.stateless_limit_s)
        stateless.append(row)
        if not row["complete"]:
            stopped = (f"the {m:g} min encode passed --stateless-limit-s {args.stateless_limit_s:g} s at "
                       f"{row['reached_minutes']:g} min")
    rows = []
    for a, b in zip(stateful, stateless):
        ratio = b["ttft_s"] / a["ttft_s"] if b["ttft_s"] and a["ttft_s"] else None
        rows.append({"minutes": a["minutes"], "stateful_ttft_s": a["ttft_s"], "stateless_ttft_s": b["ttft_s"],
                     "ttft_ratio": ratio, "stateful_tokens_prefilled": a["tokens_prefilled"],
                     "stateless_tokens_prefilled": b.get("tokens_prefilled"),
                     "stateful_forward_s": a["forward_s"], "stateless_forward_s": b.get("forward_s"),
                     "stateful_flops": a["flops"], "stateless_flops": b.get("flops"),
                     "stateless_complete": b["complete"]})
    at_target = next((r for r in rows if r["minutes"] == TARGET_MINUTES), None)
    return {"stateless_label": LABEL, "question": QUESTION,
            "policy": cfg.memory.policy, "chunk_tokens": args.chunk_tokens,
            "stateless_limit_s": args.stateless_limit_s, "device": str(bb.device), "dtype": str(bb.dtype),
            "frame_size": list(warm[0].frames.shape[1:3]), "fps": cfg.ingest.fps,
            "tokens_per_patch": bb.tokens_per_patch((warm[0].height, warm[0].width)),
            "load_avg_1min_at_start": load, "emulation_check": exact, "rows": rows, "stateful": stateful,
            "stateful_ingest": ingest, "stateless": stateless,
            "target": {"minutes": TARGET_MINUTES, "ttft_ratio_at_least": TARGET_RATIO,
                       "met": None if at_target is None or at_target["ttft_ratio"] is None
                       else at_target["ttft_ratio"] >= TARGET_RATIO}}


def _serve_versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in ("openai", "httpx", "fastapi", "uvicorn"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.0f} ms" if x < 10 else f"{x:.1f} s"


def report(result: dict) -> list[str]:
    lines = []
    if "live" in result:
        s = result["live"]["summary"]
        lines.append(f"live: {s['streams']} streams x {s['clients']} clients for {s['seconds']:g} s: "
                     f"{s['frames_per_s']} frames/s encoded (real time {s['real_time_frames_per_s']:g}); lag p50 "
                     f"{s['lag_s_p50']} s, p95 {s['lag_s_p95']} s, max {s['lag_s_max']} s; TTFT p50 "
                     f"{_ms(s['ttft_s_p50'])}, p95 {_ms(s['ttft_s_p95'])}; {s['answers']} answers, "
                     f"{s['errors']} errors {s['errors_by_kind'] or ''}")
    if "ray" in result:
        lines.append("scale-out, the same load on `serve --ray` (local cluster; worker actors on this machine's cores):")
        lines.append(f"{'server':>18} {'frames/s':>9} {'real time':>10} {'lag p50':>8} {'lag p95':>8} {'lag max':>8} "
                     f"{'TTFT p50':>9} {'errors':>7}")
        for row in result["ray"]["rows"]:
            s = row["summary"]
            lines.append(f"{row['server']:>18} {s['frames_per_s']!s:>9} {s['real_time_frames_per_s']:>10g} "
                         f"{s['lag_s_p50']!s:>8} {s['lag_s_p95']!s:>8} {s['lag_s_max']!s:>8} "
                         f"{_ms(s['ttft_s_p50']):>9} {s['errors']:>7}")
    if "compare" in result:
        c = result["compare"]
        lines.append(f"per question, {c['policy']} memory vs stateless (emulated: whole video re-encoded per "
                     f"question, {c['chunk_tokens']}-token chunks):")
        lines.append(f"{'minutes':>8} {'stateful TTFT':>14} {'stateless TTFT':>15} {'ratio':>8} "
                     f"{'tokens prefilled':>22} {'forward s':>18}")
        for r in c["rows"]:
            ratio = "-" if r["ttft_ratio"] is None else f"{r['ttft_ratio']:.0f}x"
            sl_tok = r["stateless_tokens_prefilled"]
            lines.append(f"{r['minutes']:>8g} {_ms(r['stateful_ttft_s']):>14} {_ms(r['stateless_ttft_s']):>15} "
                         f"{ratio:>8} {r['stateful_tokens_prefilled']:>9} vs {sl_tok if sl_tok else '-':>9} "
                         f"{r['stateful_forward_s']:>7.3f} vs {r['stateless_forward_s'] or 0:>7.2f}"
                         + ("" if r["stateless_complete"] else "  (stateless stopped, see JSON)"))
    return lines


def main(args: argparse.Namespace) -> int:
    from longwatch.eval.environment import model_tag, results_dir, save_result
    from longwatch.eval.flags import config_from_args

    lengths = check_settings(args)
    workers = _workers(args.ray)
    cfg = config_from_args(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the server subprocess inherits it
    folder = results_dir(args.out)
    t0 = time.perf_counter()
    result: dict = {"model": cfg.model.name, "load_avg_at_start": list(os.getloadavg()),
                    "logical_cpus": os.cpu_count(), "threads": args.threads, "serve_versions": _serve_versions()}
    if not args.skip_live:
        result["live"] = live(args, cfg)
    if workers:
        rows = [{"server": "one process", "workers": 0, "summary": result["live"]["summary"]}] if "live" in result else []
        for n in workers:
            run = live(args, cfg, {"serve.ray": "auto", "serve.ray_workers": n})
            rows.append({"server": f"ray, {n} worker{'s' if n > 1 else ''}", "workers": n, "summary": run["summary"],
                         "server_stderr_tail": run["server_stderr_tail"], "errors": run["errors"]})
        result["ray"] = {"rows": rows, "cluster": "local (serve.ray auto: 127.0.0.1, this machine's CPUs)",
                         "multi_gpu_command": "ray start --head (then ray start --address HEAD:6379 on each GPU node); "
                         "RAY_ADDRESS=HEAD:6379 longwatch bench serve --model MODEL --device cuda "
                         f"--streams {args.streams * 15} --clients {args.clients} --ray 1,2,4,8 --minutes ''"}
    if lengths:
        result["compare"] = compare(args, cfg, lengths)
    result["wall_s"] = time.perf_counter() - t0
    failed = []
    if "live" in result and result["live"]["summary"]["errors"] > TARGET_ERRORS:
        failed.append(f"live errors: {result['live']['summary']['errors_by_kind']}")
    for row in result.get("ray", {}).get("rows", []):
        if row["workers"] and row["summary"]["errors"] > TARGET_ERRORS:
            failed.append(f"{row['server']} errors: {row['summary']['errors_by_kind']}")
    if "compare" in result and result["compare"]["target"]["met"] is False:
        failed.append(f"stateless/stateful TTFT at {TARGET_MINUTES:g} min below {TARGET_RATIO:g}x")
    result["failures"] = failed
    name = args.name or f"serve_{model_tag(cfg.model.name)}_{args.streams}x{args.clients}"
    path = save_result(name, result, folder)
    if args.json:
        summary = {"live": result["live"]["summary"] if "live" in result else None,
                   "compare": {k: result["compare"][k] for k in ("rows", "emulation_check", "target",
                                                                 "stateless_label")} if "compare" in result else None}
        print(json.dumps(summary | {"failures": failed, "saved": str(path)}))
    else:
        print("\n".join(report(result)))
        print(f"{result['wall_s']:.0f} s; saved {path}")
    for line in failed:
        print(f"bench serve: target missed: {line}", file=sys.stderr)
    return 1 if failed else 0
