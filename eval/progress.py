"""Progress bars for long work (ask, eval, bench): tqdm on stderr, so stdout (tables, --json) stays clean.

Shown when stderr is a terminal; --progress forces them on (a log file, a CI job), --no-progress off.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tqdm import tqdm


def add_progress_flags(p: argparse.ArgumentParser) -> None:
    """--progress / --no-progress into args.progress: True, False, or None (on a terminal only)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="progress bars on stderr even when it is not a terminal (default: on a terminal only)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def shown(force: bool | None = None) -> bool:
    """force wins when given; otherwise bars are shown when stderr is a terminal."""
    return sys.stderr.isatty() if force is None else bool(force)


def bar(total: float | None = None, desc: str = "", unit: str = "it", force: bool | None = None,
        **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr; disabled (updates are no-ops) unless shown(force)."""
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not shown(force), dynamic_ncols=True,
                **kwargs)


def seconds_bar(total_s: float | None, desc: str, force: bool | None = None, **kwargs: Any) -> tqdm:
    """A bar over seconds of a stream ("12.0/40.0 s"); without a known length it counts seconds up."""
    fmt = ("{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}]" if total_s else
           "{desc}: {n:.1f} s [{elapsed}]")
    return bar(total_s or None, desc, "s", force, bar_format=fmt, **kwargs)


def advance_to(b: tqdm, seconds: float) -> None:
    """Move a seconds bar to `seconds` of stream (patches end at irregular times; never past the total)."""
    target = min(seconds, b.total) if b.total else seconds
    if target > b.n:
        b.update(target - b.n)
