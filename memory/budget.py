"""Device-tier planning: how many tokens each part of the cache may use, checked when a stream starts.

The device budget is split, in tokens of KV (bytes_per_token from the model), into the cache
    prompt prefix + sink blocks + (window + 1) blocks      always resident while encoding
    + retrieval slots (retrieve_blocks + time_blocks)       rekv, only while answering
    + answer_tokens                                         question and answer, while answering
    + room for the compressed memory                        infinipot / streammem, while answering
and, for infinipot / streammem, the compressed-memory store itself (device tensors outside the
cache, so encoding attends to sinks and window only). The store and its room in the cache share
what is left equally: a question copies the store into the cache after the window.
A budget that cannot hold that is rejected before any frame is read, with the setting to change
and the minimum that would work.
"""

from __future__ import annotations

from dataclasses import dataclass

from longwatch.memory.schema import ConfigError, format_bytes
from longwatch.memory.config import MemoryConfig

TIMESTAMP_TOKENS_MAX = 12
"""'<86399.5 seconds>' tokenises to 12 tokens; used to size blocks for a day-long stream."""


@dataclass(frozen=True)
class DevicePlan:
    bytes_per_token: int
    block_tokens: int
    """Largest block: vision tokens + vision start/end + the longest timestamp text."""
    capacity_tokens: int | None
    """Cache capacity in tokens (None = unbounded, policy full)."""
    fixed_tokens: int
    """prefix + sinks + (window + 1) blocks + retrieval slots + answer reserve."""
    memory_tokens: int
    """Compressed memory budget in tokens (infinipot, streammem; 0 otherwise); the cache keeps as
    much room again to bring it in for a question."""
    retrieval_blocks: int

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def plan_device(cfg: MemoryConfig, bytes_per_token: int, vision_tokens: int, prefix_tokens: int,
                model_name: str = "the model") -> DevicePlan:
    """Check the budgets against the model and frame size; raise ConfigError naming the setting."""
    block = vision_tokens + 2 + TIMESTAMP_TOKENS_MAX
    per_block_bytes = block * bytes_per_token
    retrieval = cfg.retrieve_blocks + cfg.time_blocks if cfg.policy == "rekv" else 0
    if cfg.policy == "full":
        return DevicePlan(bytes_per_token, block, None, 0, 0, 0)
    capacity = cfg.device_budget // bytes_per_token
    what = (f"{model_name} at {vision_tokens} vision tokens per patch "
            f"({block} tokens, {format_bytes(per_block_bytes)} per block)")
    base = prefix_tokens + cfg.sink_blocks * block + cfg.answer_tokens + retrieval * block
    fixed = base + (cfg.window_blocks + 1) * block
    compress_min = 0
    if cfg.policy in ("infinipot", "streammem"):
        compress_min = 2 + TIMESTAMP_TOKENS_MAX + 1 + max(1, round(vision_tokens * cfg.compress_ratio))
    need = fixed + 2 * compress_min
    if capacity < base + 2 * block:
        raise ConfigError(
            f"memory.device_budget: {format_bytes(cfg.device_budget)} cannot hold the prompt prefix, "
            f"{cfg.sink_blocks} sink block(s), one block, the window's next block and the answer reserve "
            f"({cfg.answer_tokens} tokens){' and retrieval slots' if retrieval else ''} for {what}; "
            f"the minimum is {format_bytes(need * bytes_per_token)} with window_blocks={cfg.window_blocks}")
    if capacity < need:
        fit = max(0, (capacity - base - 2 * compress_min) // block - 1)
        raise ConfigError(
            f"memory.window_blocks: a window of {cfg.window_blocks} blocks does not fit in "
            f"memory.device_budget {format_bytes(cfg.device_budget)} for {what}; at most {fit} fit, "
            f"or raise device_budget to {format_bytes(need * bytes_per_token)}")
    if cfg.policy == "rekv":
        tiers = [t for t in (cfg.host_budget, cfg.disk_budget) if t > 0]
        if not tiers:
            raise ConfigError("memory.host_budget: rekv offloads blocks leaving the window, but host_budget and "
                              f"disk_budget are both 0; give at least {format_bytes(per_block_bytes)}")
        for name, value in (("host_budget", cfg.host_budget), ("disk_budget", cfg.disk_budget)):
            if 0 < value < per_block_bytes:
                raise ConfigError(f"memory.{name}: {format_bytes(value)} cannot hold one block of {what}; "
                                  f"use 0 to disable the tier or at least {format_bytes(per_block_bytes)}")
    if cfg.policy in ("infinipot", "streammem"):
        memory = (capacity - fixed) // 2
        return DevicePlan(bytes_per_token, block, fixed + memory, fixed, memory, retrieval)
    return DevicePlan(bytes_per_token, block, capacity, fixed, 0, retrieval)
