"""sliding: attention sinks plus the recent window; older blocks are dropped (StreamingLLM)."""

from __future__ import annotations

from longwatch.memory.policies.base import Exit, Policy


class SlidingPolicy(Policy):
    name = "sliding"
    on_exit = Exit.DROP
