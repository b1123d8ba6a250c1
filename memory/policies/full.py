"""full: every block stays on the device and every patch attends to all of them (exact, unbounded baseline)."""

from __future__ import annotations

from longwatch.memory.config import MemoryConfig
from longwatch.memory.policies.base import Exit, Policy


class FullPolicy(Policy):
    name = "full"
    on_exit = Exit.KEEP

    def window(self, cfg: MemoryConfig) -> int | None:
        return None
