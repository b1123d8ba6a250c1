"""Memory policies by name; the interface they implement is documented on `memory.policies.base.Policy`."""

from __future__ import annotations

from longwatch.memory.config import MemoryConfig
from longwatch.memory.policies.base import Exit, Policy, Selection, leaving_window
from longwatch.memory.policies.full import FullPolicy
from longwatch.memory.policies.infinipot import InfiniPotPolicy
from longwatch.memory.policies.rekv import ReKVPolicy
from longwatch.memory.policies.sliding import SlidingPolicy
from longwatch.memory.policies.streammem import StreamMemPolicy

REGISTRY: dict[str, type[Policy]] = {
    "full": FullPolicy,
    "sliding": SlidingPolicy,
    "rekv": ReKVPolicy,
    "infinipot": InfiniPotPolicy,
    "streammem": StreamMemPolicy,
}


def make_policy(cfg: MemoryConfig) -> Policy:
    try:
        return REGISTRY[cfg.policy](cfg)
    except KeyError:
        raise ValueError(f"memory.policy: unknown policy {cfg.policy!r} (choose from {', '.join(REGISTRY)})") from None


__all__ = ["Exit", "Policy", "Selection", "REGISTRY", "leaving_window", "make_policy"]
