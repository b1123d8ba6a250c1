"""Benchmark annotation loaders: read a file or folder, detect its format from content, normalize it.

    benches = load_benches("../shared/benchmarks/ovobench_sample.json")      # auto-detected
    benches = load_benches("runs/needle", fmt="needlestream")                # forced
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

from longwatch.eval.formats.offline import load_flat, load_videomme_template
from longwatch.eval.formats.ovobench import load_ovobench
from longwatch.eval.formats.rekv import load_rekv
from longwatch.eval.formats.schema import Bench, BenchFormatError, Question, Video
from longwatch.eval.formats.streamingbench import load_streamingbench
from longwatch.eval.formats.vnbench import load_vnbench

__all__ = ["Bench", "BenchFormatError", "FORMATS", "Question", "Video", "detect_format", "load_bench", "load_benches"]

log = logging.getLogger(__name__)

LOADERS: dict[str, Callable[[Any, str, str], Bench]] = {
    "rekv": load_rekv,
    "needlestream": load_rekv,
    "streamingbench": load_streamingbench,
    "ovobench": load_ovobench,
    "mlvu": lambda d, s, n: load_flat("mlvu", d, s, n),
    "longvideobench": lambda d, s, n: load_flat("longvideobench", d, s, n),
    "videomme": lambda d, s, n: (load_videomme_template(d, s, n) if isinstance(d[0], dict) and "questions" in d[0]
                                 else load_flat("videomme", d, s, n)),
    "egoschema": lambda d, s, n: load_flat("egoschema", d, s, n),
    "cgbench": lambda d, s, n: load_flat("cgbench", d, s, n),
    "vnbench": load_vnbench,
}
FORMATS = tuple(LOADERS)

# (format, keys that must all be in the first record), checked in order.
_SIGNATURES: list[tuple[str, tuple[str, ...]]] = [
    ("rekv", ("conversations", "video_path")),
    ("streamingbench", ("questions", "video_path")),
    ("videomme", ("questions", "video_id")),
    ("ovobench", ("id", "task", "video")),
    ("longvideobench", ("candidates", "correct_choice")),
    ("mlvu", ("video", "question_type", "answer")),
    ("videomme", ("videoID", "task_type", "options")),
    ("egoschema", ("video_idx", "option")),
    ("egoschema", ("q_uid", "option 0")),
    ("cgbench", ("video_uid", "right_answer")),
    ("vnbench", ("video", "options", "gt", "try")),
    ("vnbench", ("video_path", "prompt", "gt", "task_type")),
]


class NotABenchmark(BenchFormatError):
    """A known file that holds no questions (video_durations.json); folders skip it."""


def read_json(path: Path) -> Any:
    """JSON, or JSON Lines when the file is .jsonl or holds one object per line."""
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if len(lines) > 1:
            try:
                return [json.loads(ln) for ln in lines]
            except json.JSONDecodeError:
                pass
        raise BenchFormatError(f"{path}: not valid JSON or JSON Lines ({e})") from None


def detect_format(data: Any) -> str:
    """The format of parsed annotation `data`; ValueError saying what was seen when none fits."""
    if isinstance(data, dict):
        if "files" in data and "_about" in data:
            raise NotABenchmark("derived video-duration table (video_durations.json), not a benchmark")
        raise ValueError(f"top level is an object with keys {sorted(data)[:8]}; benchmarks are lists of records")
    if not isinstance(data, list) or not data:
        raise ValueError("expected a non-empty list of records")
    first = data[0]
    if isinstance(first, list):
        if first and isinstance(first[0], dict) and "questions" in first[0]:
            return "streamingbench"  # sqa: one list of entries per video
        raise ValueError("a list of lists whose items are not StreamingBench entries")
    if not isinstance(first, dict):
        raise ValueError(f"records are {type(first).__name__}, not objects")
    for fmt, keys in _SIGNATURES:
        if all(k in first for k in keys):
            if fmt == "rekv" and any("needlestream" in r for r in data if isinstance(r, dict)):
                return "needlestream"
            return fmt
    raise ValueError(f"unknown format: first record has keys {sorted(first)} "
                     f"(known formats: {', '.join(FORMATS)}; force one with --format)")


def bench_name(path: Path) -> str:
    """'rekv_qaego4d_sample.json' -> 'qaego4d': the file stem without the sample-file decorations."""
    name = path.stem.removesuffix("_sample")
    return name.removeprefix("rekv_") or path.stem


def load_bench(path: str | Path, fmt: str | None = None) -> Bench:
    """Load one annotation file; `fmt` overrides detection. Errors name the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise BenchFormatError(f"{path}: no such file")
    data = read_json(path)
    try:
        if fmt is None:
            fmt = detect_format(data)
        elif fmt not in LOADERS:
            raise ValueError(f"unknown --format {fmt!r} (choose from {', '.join(FORMATS)})")
        bench = LOADERS[fmt](data, str(path), bench_name(path))
    except NotABenchmark as e:
        raise NotABenchmark(f"{path}: {e}") from None
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        where = f" as {fmt}" if fmt else ""
        raise BenchFormatError(f"{path}: cannot read{where}: {e}") from None
    if not bench.questions:
        raise BenchFormatError(f"{path}: no questions")
    return bench


def load_benches(path: str | Path, fmt: str | None = None) -> list[Bench]:
    """A file, or every *.json / *.jsonl in a folder (sorted; non-benchmark tables are skipped, logged)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".json", ".jsonl") and p.is_file())
        if not files:
            raise BenchFormatError(f"{path}: no .json or .jsonl annotation files")
        benches = []
        for f in files:
            try:
                benches.append(load_bench(f, fmt))
            except NotABenchmark as e:
                log.warning("skipping %s", e)
        return benches
    return [load_bench(path, fmt)]
