"""The config schema, re-exported for app/: ConfigError and byte sizes (memory/schema.py), pydantic validation (eval/validate.py)."""

from __future__ import annotations

from longwatch.eval.validate import replace, validate
from longwatch.memory.schema import ConfigError, as_dict, format_bytes, parse_bytes

__all__ = ["ConfigError", "as_dict", "format_bytes", "parse_bytes", "replace", "validate"]
