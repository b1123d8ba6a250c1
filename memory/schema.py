"""Config schema basics: the ConfigError every config check raises, and byte sizes ("64MB" = 10^6, "2GiB" = 2^30).

Lives with the memory config because memory budgets are their first user (`plan_device`, memory/block.py);
eval/validate.py validates whole configs with pydantic on top of them, and app/schema.py re-exports both.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
    "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40,
}


class ConfigError(ValueError):
    """A config key or value is wrong; the message names the key."""


def parse_bytes(value: int | float | str) -> int:
    """Parse a byte size: 1024, "64MB" (10^6), "2GiB" (2^30), "512M" (2^20). Zero is allowed."""
    # Hand-written: eight lines, and the accepted units are part of our CLI contract.
    if isinstance(value, bool):
        raise ValueError(f"not a byte size: {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"byte size must be >= 0, got {value}")
        return int(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"not a byte size: {value!r} (use e.g. 512MB, 2GiB, 1048576)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def format_bytes(n: int | float) -> str:
    """Human-readable binary size: 1536 -> '1.5 KiB'."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def as_dict(obj: Any) -> dict[str, Any]:
    """Plain-dict view of a config dataclass (for JSON reports)."""
    return dataclasses.asdict(obj)
