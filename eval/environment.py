"""Where a benchmark ran: machine, library versions, the exact command; and saving results where --out says.

Without --out, results go to ./runs under the current directory, never into the installed package
(the figures the README cites are committed under eval/results/; `make bench-cpu` writes them there).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import sys
import tempfile
from pathlib import Path

DEFAULT_OUT = Path("runs")
"""Where results go without --out: relative, so under the current directory."""


class OutputNotWritable(OSError):
    """--out cannot be created or written; the CLI prints it as one line, exit status 2."""

    user_facing = True


def results_dir(out: str | Path | None = None) -> Path:
    """The results folder: `out`, else ./runs; created, and checked writable before any work starts."""
    folder = Path(out) if out else DEFAULT_OUT
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise OutputNotWritable(f"cannot write to the output folder {folder}: {e.strerror or e} "
                                "(give --out a folder you can write to)") from None
    return folder


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


def model_tag(model: str) -> str:
    """The model's name in a result file's name: a hub id's, file's or folder's last part, never a path."""
    return Path(model).name or model


def save_result(name: str, payload: dict, out_dir: str | Path | None = None) -> Path:
    """Write payload plus machine/versions/command/date to <out_dir or ./runs>/<name>.json; returns the path."""
    folder = results_dir(out_dir)
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
