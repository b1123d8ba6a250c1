"""Where a benchmark ran: machine, library versions, the exact command; and saving results under eval/results/."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    import psutil
    import torch

    info = {"platform": platform.platform(), "cpu": _cpu_name(), "logical_cpus": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1), "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["gpu"] = {"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1), "count": torch.cuda.device_count()}
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "faiss-cpu", "faiss-gpu", "numpy", "av", "flash-attn"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    import torch

    if torch.version.cuda:
        out["cuda"] = torch.version.cuda
    return out


def command_line() -> str:
    argv = sys.argv[:]
    if argv and argv[0].endswith(("__main__.py", "cli.py")):
        argv[0] = "longwatch"
    elif argv:
        argv[0] = Path(argv[0]).name
    return " ".join(shlex.quote(a) for a in argv)


def provenance() -> dict:
    """What every saved result carries: the command, the date (UTC), the machine and the library versions."""
    return {"command": command_line(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(), "versions": versions()}


def save_result(name: str, payload: dict, out_dir: str | Path | None = None) -> Path:
    """Write payload plus machine/versions/command/date to eval/results/<name>.json; returns the path."""
    folder = Path(out_dir) if out_dir else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": name, **provenance(), **payload}
    path = folder / f"{name}.json"
    path.write_text(json.dumps(record, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "__dict__"):
        return o.__dict__
    return str(o)
