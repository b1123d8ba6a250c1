"""The config schema, re-exported for app/: it lives in memory/schema.py, below app/, so memory/ never imports upward."""

from __future__ import annotations

from longwatch.memory.schema import ConfigError, as_dict, build, format_bytes, parse_bytes

__all__ = ["ConfigError", "as_dict", "build", "format_bytes", "parse_bytes"]
