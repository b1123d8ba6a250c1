"""Decode benchmark: sampled frames/s and peak RSS of each file reader on a 10-minute 720p H.264 video.

    longwatch bench decode                     # or: python -m longwatch.eval.bench_decode
    longwatch bench decode --video my.mp4 --fps 2

Each reader runs in its own subprocess (so peak RSS is its own) through ingest.sources, sampling by
timestamp at --fps exactly as ingest does. The video is generated once (PyAV, libx264 veryfast,
x264's default GOP) and cached. Results go to --out (default ./runs/decode_*.json) with the machine, library
versions and the exact command; the winner is ingest's `auto` reader.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

READER_NAMES = ("decord", "pyav", "opencv", "torchcodec")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--video", type=Path, help="video to decode (default: generate the 720p test video)")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the generated video (default 10)")
    parser.add_argument("--fps", type=float, default=2.0, help="sampling rate, by timestamp (default 2)")
    parser.add_argument("--readers", default=",".join(READER_NAMES), help="comma-separated readers to run")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs per reader, interleaved; the median is reported (default 3)")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "longwatch" / "bench",
                        help="where the generated video is kept between runs")
    parser.add_argument("--out", type=Path, help="result JSON (default ./runs/decode_720p_<minutes>min.json)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)


def make_test_video(path: Path, minutes: float, size: tuple[int, int] = (720, 1280), rate: int = 30) -> Path:
    """FFmpeg's testsrc2 pattern (moving, coloured) encoded like a typical phone or camera file."""
    import av

    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.mp4")
    h, w = size
    src = f"testsrc2=size={w}x{h}:rate={rate}:duration={minutes * 60:g}"
    with av.open(src, format="lavfi") as inp, av.open(str(tmp), "w") as out:
        s = out.add_stream("libx264", rate=rate)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "veryfast", "crf": "23"}
        for frame in inp.decode(video=0):
            frame.pts = None
            for p in s.encode(frame.reformat(format="yuv420p")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    tmp.rename(path)
    return path


def run_worker(reader: str, video: Path, fps: float) -> dict:
    """In the subprocess: decode `video` with one reader, sampling at `fps`; report speed and memory."""
    import psutil

    from longwatch.ingest.patches import TimestampSampler
    from longwatch.ingest.sources import READERS, ReadStats, probe

    info = probe(str(video))
    baseline = psutil.Process().memory_info().rss
    stats, sampler = ReadStats(reader=reader), TimestampSampler(fps)
    start = time.perf_counter()
    checksum = 0
    for frame, _t in READERS[reader](str(video), sampler, stats, info.rate or 25.0):
        checksum += int(frame[::64, ::64].sum())  # touch the pixels so nothing is left lazy
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    return {
        "reader": reader, "frames_kept": stats.kept, "frames_seen": stats.seen, "seconds": round(seconds, 3),
        "kept_frames_per_s": round(stats.kept / seconds, 2),
        "decoded_frames_per_s": round(stats.seen / seconds, 1),
        "video_seconds_per_s": round((info.duration_s or 0) / seconds, 2),
        "peak_rss_mib": round(peak / 2**20, 1), "baseline_rss_mib": round(baseline / 2**20, 1),
        "checksum": checksum,
    }


def _run_one(reader: str, video: Path, fps: float) -> dict:
    proc = subprocess.run([sys.executable, "-m", "longwatch.eval.bench_decode", "--worker", reader, "--video", str(video),
                           "--fps", str(fps)], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"reader": reader, "error": tail[0]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _summarise(reader: str, runs: list[dict]) -> dict:
    good = [r for r in runs if "error" not in r]
    if not good:
        return {"reader": reader, "error": runs[0]["error"]}
    good.sort(key=lambda r: r["kept_frames_per_s"])
    median = good[len(good) // 2]
    peak = max(r["peak_rss_mib"] for r in good)
    return {**median, "peak_rss_mib": peak, "decode_rss_mib": round(peak - median["baseline_rss_mib"], 1),
            "kept_frames_per_s_runs": [r["kept_frames_per_s"] for r in runs if "error" not in r],
            "failed_runs": len(runs) - len(good)}


def machine() -> dict:
    import psutil

    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"platform": platform.platform(), "cpu": cpu, "logical_cpus": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)}


def versions() -> dict:
    import av
    import cv2
    import numpy

    out = {"python": platform.python_version(), "av": av.__version__, "ffmpeg (PyAV)": av.ffmpeg_version_info,
           "opencv": cv2.__version__, "numpy": numpy.__version__}
    try:
        import decord

        out["decord"] = decord.__version__
    except ImportError:
        out["decord"] = None
    try:
        import torchcodec

        out["torchcodec"] = torchcodec.__version__
    except (ImportError, RuntimeError):  # RuntimeError: a torchcodec built for another torch fails to load
        out["torchcodec"] = None
    return out


def command_line() -> str:
    args = sys.argv[1:]
    if sys.argv[0].endswith("bench_decode.py"):
        return shlex.join(["python", "-m", "longwatch.eval.bench_decode", *args])
    return shlex.join(["longwatch", *args])


def main(args: argparse.Namespace) -> int:
    if args.worker:
        print(json.dumps(run_worker(args.worker, args.video, args.fps)))
        return 0
    command = command_line()
    readers = [r.strip() for r in args.readers.split(",") if r.strip()]
    unknown = sorted(set(readers) - set(READER_NAMES))
    if unknown:
        print(f"bench decode: unknown reader(s) {', '.join(unknown)}", file=sys.stderr)
        return 2
    from longwatch.eval.environment import results_dir

    folder = results_dir(args.out.parent if args.out else None)  # writable, checked before the minutes of work
    video = args.video
    if video is None:
        video = args.cache_dir / f"testsrc2_720p30_{args.minutes:g}min_x264.mp4"
        t0 = time.perf_counter()
        if not video.exists():
            print(f"generating {video} ...", file=sys.stderr, flush=True)
        make_test_video(video, args.minutes)
        print(f"video ready in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    if not video.exists():
        print(f"bench decode: no such video: {video}", file=sys.stderr)
        return 2
    from longwatch.ingest.sources import probe

    info = probe(str(video))
    runs: dict[str, list[dict]] = {r: [] for r in readers}
    load_before = os.getloadavg()
    for _ in range(max(1, args.repeats)):  # interleaved, so a busy spell on the machine hits every reader
        for reader in readers:
            runs[reader].append(_run_one(reader, video, args.fps))
            print(json.dumps(runs[reader][-1]), file=sys.stderr, flush=True)
    results = [_summarise(reader, rs) for reader, rs in runs.items()]
    ok = [r for r in results if "error" not in r]
    winner = max(ok, key=lambda r: r["kept_frames_per_s"])["reader"] if ok else None
    report = {
        "benchmark": "decode", "command": command, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "video": {"path": str(video), "codec": info.codec, "width": info.width, "height": info.height,
                  "rate": info.rate, "duration_s": info.duration_s, "frames": info.frames,
                  "generated": args.video is None},
        "sample_fps": args.fps, "repeats": args.repeats, "machine": machine(), "versions": versions(),
        "load_average": {"before": [round(x, 2) for x in load_before],
                         "after": [round(x, 2) for x in os.getloadavg()]},
        "results": results, "winner": winner,
        "notes": "kept_frames_per_s: RGB frames delivered at the sampling rate per wall second (decode + "
                 "seek + colour conversion), median over the runs; peak_rss_mib: largest ru_maxrss of the "
                 "reader's own subprocess; decode_rss_mib: that minus the RSS after imports (numpy, PyAV, torch).",
    }
    out = args.out or folder / f"decode_720p_{args.minutes:g}min.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'reader':<8} {'kept fr/s':>10} {'decoded fr/s':>13} {'video s/s':>10} {'peak RSS MiB':>13} "
          f"{'decode RSS MiB':>15}")
    for r in results:
        if "error" in r:
            print(f"{r['reader']:<8} error: {r['error']}")
        else:
            print(f"{r['reader']:<8} {r['kept_frames_per_s']:>10} {r['decoded_frames_per_s']:>13} "
                  f"{r['video_seconds_per_s']:>10} {r['peak_rss_mib']:>13} {r['decode_rss_mib']:>15}")
    print(f"winner: {winner}  ->  {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m longwatch.eval.bench_decode", description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
