"""Memory policies by name; the interface they implement is documented on `memory.policies.base.Policy`."""

from __future__ import annotations

from memory.config import MemoryConfig
from memory.policies.base import Exit, Policy, Selection
from memory.policies.full import FullPolicy
from memory.policies.infinipot import InfiniPotPolicy
from memory.policies.rekv import ReKVPolicy
from memory.policies.sliding import SlidingPolicy
from memory.policies.streammem import StreamMemPolicy

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


__all__ = ["Exit", "Policy", "Selection", "REGISTRY", "make_policy"]
