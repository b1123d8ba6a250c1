"""Memory blocks: their metadata, the tensor operations on their K/V, the stream's state, device-tier planning.

A block is one temporal patch's K/V plus the metadata policies decide on; the tensor operations on a block's
K/V rotate, place, compress and shrink it; the stream's state and what persistence is told about each
change complete the vocabulary the store, encoding, answering and the journal share.

Block K/V are [layers, 2 (keys, values), kv_heads, tokens, head_dim], keys already rotated (RoPE).

Device-tier planning (`plan_device`): how many tokens each part of the cache may use, checked when a stream
starts. The device budget is split, in tokens of KV (bytes_per_token from the model), into the cache
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

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from longwatch.backbone.inputs import apply_shift, shift_cos_sin
from longwatch.memory.blockfiles import BlockFiles, FileRef
from longwatch.memory.config import MemoryConfig
from longwatch.memory.merge import merge_page
from longwatch.memory.schema import ConfigError, format_bytes

DEVICE, MEMORY, HOST, DISK, EVICTED = "device", "memory", "host", "disk", "evicted"
"""Tiers of a block: `memory` is the device-resident store of compressed blocks (infinipot, streammem)."""


@dataclass
class Block:
    """One temporal patch (timestamp text + vision tokens), or the prompt prefix (id -1).

    Token layout inside a block, identical in every layer:
        [head text: timestamp + <|vision_start|>] [vision tokens] [<|vision_end|>] [prototype?]
    Compression keeps head and tail text (so the block still says when it happened) and a
    per-layer choice of `n_vis` vision tokens (the same count in every layer, so every layer of
    the cache has the same length and transformers' shared attention mask stays valid).

    Positions: `pos_start` is absolute (model position + the stream's re-basing offset) and `span`
    is the position advance of the block. Stored copies carry keys rotated for model positions
    `pos - rot_base`; the device copy always matches the stream's current base.
    """

    id: int
    kind: str
    t_start: float
    t_end: float
    t_mid: float
    pos_start: int
    span: int
    n_head: int
    n_vis: int
    n_tail: int
    grid: tuple[int, int] = (0, 0)
    """Merged (h, w) of the vision tokens at creation."""
    n_vis_orig: int = 0
    n_proto: int = 0
    is_sink: bool = False
    tier: str = DEVICE
    rot_base: int = 0
    created: int = 0
    last_used: int = 0
    summary: torch.Tensor | None = None
    """[num_layers, kv_heads * head_dim] float32 key summary for retrieval (None when unused)."""
    scores: torch.Tensor | None = None
    """[num_layers, n_vis] float32 importance of the kept vision tokens (compressing policies)."""
    kept: torch.Tensor | None = None
    """[num_layers, n_vis] original indices of the kept vision tokens once compressed (None = all)."""
    meta: dict = field(default_factory=dict)

    @property
    def n_tokens(self) -> int:
        return self.n_head + self.n_vis + self.n_tail + self.n_proto

    def covers(self, t0: float, t1: float) -> bool:
        """True if [t0, t1] overlaps the block's time span [t_start, t_end)."""
        return self.t_start <= t1 and t0 < self.t_end

    def describe(self) -> dict:
        return {"id": self.id, "t_start": round(self.t_start, 3), "t_end": round(self.t_end, 3),
                "tokens": self.n_tokens, "tier": self.tier, "sink": self.is_sink}


def rotate_kv(kv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """A copy of kv [layers, 2, kv_heads, n, head_dim] with keys rotated by a position shift."""
    out = kv.clone()
    out[:, 0] = apply_shift(kv[:, 0], cos, sin)
    return out


def placed(kv: torch.Tensor, block: Block, base: int, target: int | None, rotary: torch.nn.Module) -> torch.Tensor:
    """kv of a stored block (keys rotated for model positions pos - block.rot_base) rotated to start at
    model position `target` (None = its own position in a stream re-based by `base`)."""
    phase = block.pos_start - block.rot_base
    goal = block.pos_start - base if target is None else target
    if goal == phase:
        return kv
    cos, sin = shift_cos_sin(rotary, goal - phase, torch.float32, kv.device)
    return rotate_kv(kv, cos, sin)


def compress_kv(kv: torch.Tensor, block: Block, keep: torch.Tensor, prototype: bool) -> torch.Tensor:
    """Keep head text, per-layer vision tokens `keep` [layers, k], tail text, plus an optional prototype.

    kv: [layers, 2, kv_heads, n, head_dim] of the whole block; the prototype (mean key and value of
    vision tokens at the first compression) goes last and is kept as is by later compressions.
    """
    h, v = block.n_head, block.n_vis
    head = kv[:, :, :, :h]
    vis = kv[:, :, :, h: h + v]
    tail = kv[:, :, :, h + v: h + v + block.n_tail]
    layers, two, heads, _, dim = kv.shape
    idx = keep.to(kv.device)[:, None, None, :, None].expand(layers, two, heads, keep.shape[1], dim)
    parts = [head, torch.gather(vis, 3, idx), tail]
    if prototype:
        start = h + v + block.n_tail
        if block.n_proto:  # keep the prototype of the block's original frame
            parts.append(kv[:, :, :, start: start + block.n_proto])
        else:
            parts.append(vis.float().mean(3, keepdim=True).to(kv.dtype))
    return torch.cat(parts, dim=3)


def shrink(block: Block, kv: torch.Tensor, scores: torch.Tensor, k: int,
           keep_fn: Callable[[torch.Tensor, int], torch.Tensor], prototype: bool,
           rotary: torch.nn.Module | None = None) -> torch.Tensor:
    """kv of `block` keeping its text and k vision tokens per layer (`keep_fn(scores, k)`: the policy's
    pick by `scores` [layers, n_vis]), plus a prototype token if `prototype`; updates the block's metadata.
    With the model's `rotary` module, the tokens not kept are merged into their most similar kept ones
    (memory/merge.py: livevlm's pages) instead of dropped; the block has the same length either way."""
    # a new prototype must not make the block longer: it takes one vision token's place
    add_proto = prototype and not block.n_proto and block.n_vis >= 2
    k = min(k, block.n_vis - 1) if add_proto else min(k, block.n_vis)
    keep = keep_fn(scores, k)
    new = compress_kv(kv, block, keep, add_proto or bool(block.n_proto))
    block.scores = torch.gather(scores, 1, keep)
    orig = block.kept if block.kept is not None else torch.arange(block.n_vis).expand(keep.shape[0], -1)
    if rotary is not None and keep.shape[1] < block.n_vis:
        h = block.n_head
        new[:, :, :, h: h + keep.shape[1]] = merge_page(kv[:, :, :, h: h + block.n_vis], keep, orig, block.grid,
                                                        rotary)[0]
    block.kept = torch.gather(orig, 1, keep)
    block.n_vis = keep.shape[1]
    if add_proto:
        block.n_proto = 1
    return new


class Recorder(Protocol):
    """What the store tells persistence (memory/persist.py's Journal) about every change."""

    def put(self, block: Block, kv: torch.Tensor, state: dict) -> None: ...
    def drop(self, block: Block) -> None: ...
    def tier(self, block: Block) -> None: ...
    def rebase(self, state: dict, pinned: dict[int, int]) -> None: ...
    def ref_for(self, block: Block) -> FileRef | None: ...
    @property
    def files(self) -> BlockFiles: ...


@dataclass
class StreamState:
    """Positions and counters of one stream (journaled with every change, restored on load)."""

    next_position: int = 0
    """Model position where the next segment starts (absolute = model + base)."""
    base: int = 0
    """How far the stream has been re-based."""
    next_id: int = 0
    tick: int = 0
    """Logical clock: advances per patch and per answer (Block.created, Block.last_used)."""
    patches: int = 0
    t_last: float = 0.0
    rebases: int = 0
    evicted: int = 0
    max_distance: int = 0
    """Largest query-to-key position distance any forward of this stream has seen (BlockStore.reach)."""
    size: tuple[int, int] | None = None
    """Frame size (h, w) the device tier was planned for."""

    def update(self, saved: dict) -> None:
        """Counters and positions from `as_dict` output (size is left alone: it comes with a plan)."""
        for f in dataclasses.fields(self):
            if f.name in saved and f.name != "size":
                setattr(self, f.name, saved[f.name])

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["size"] = list(self.size) if self.size else None
        return d


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
    index_rows: int = 0
    """Most blocks the retrieval index can ever hold: as many of the smallest block as host + disk hold."""
    device_reserve: int = 0
    """Device bytes held back from the cache: key summaries of the blocks on the device, plus the whole
    index when it lives there (torch, faiss-gpu)."""
    host_reserve: int = 0
    """Host bytes held back from the host tier's blocks for an index in host RAM (faiss on the CPU)."""

    def as_dict(self) -> dict:
        return self.__dict__.copy()


@dataclass(frozen=True)
class IndexCost:
    """What the retrieval index costs per stored block and where it lives (memory/retrieval.py)."""

    entry_bytes: int
    """One block's entry: its key summary [layers, kv_heads * head_dim] float32 plus the index's own overhead."""
    on_device: bool
    """True for an index on the compute device (torch, faiss-gpu), False for host RAM (faiss on the CPU)."""


def _index_reserves(cfg: MemoryConfig, index: IndexCost, smallest_block_bytes: int) -> tuple[int, int, int]:
    """(index rows, device bytes, host bytes) to hold back for retrieval: the summaries of the blocks on the
    device, and an index entry for every block host + disk could ever hold (the smallest block's size)."""
    e = index.entry_bytes
    device = (cfg.sink_blocks + cfg.window_blocks + 1) * e
    if index.on_device:
        rows = cfg.host_budget // smallest_block_bytes + cfg.disk_budget // smallest_block_bytes
        return rows, device + rows * e, 0
    rows = (cfg.host_budget + cfg.disk_budget) // (smallest_block_bytes + e)  # the entries share host RAM with blocks
    return rows, device, rows * e


RETRIEVING = ("rekv", "livevlm")
"""Policies that offload blocks leaving the window and retrieve them per question."""


def plan_device(cfg: MemoryConfig, bytes_per_token: int, vision_tokens: int, prefix_tokens: int,
                model_name: str = "the model", index: IndexCost | None = None) -> DevicePlan:
    """Check the budgets against the model and frame size; raise ConfigError naming the setting.

    `index`: the retrieval index's cost (rekv); its entries and the device blocks' key summaries are held
    back from the tier they live in, so tier bytes count everything a stream keeps, not only K/V.
    """
    block = vision_tokens + 2 + TIMESTAMP_TOKENS_MAX
    per_block_bytes = block * bytes_per_token
    # videorag's fresh context (prefix + its picked patches + the answer) is held while answering like rekv's slots
    retrieval = cfg.retrieve_blocks + cfg.time_blocks if cfg.policy in RETRIEVING + ("videorag",) else 0
    if cfg.policy == "full":
        return DevicePlan(bytes_per_token, block, None, 0, 0, 0)
    rows = device_reserve = host_reserve = 0
    if cfg.policy in RETRIEVING and index is not None:  # livevlm's pages are its smallest blocks
        kept = max(1, round(vision_tokens * cfg.compress_ratio)) if cfg.policy == "livevlm" else vision_tokens
        rows, device_reserve, host_reserve = _index_reserves(cfg, index, (kept + 3) * bytes_per_token)
        if host_reserve and host_reserve + per_block_bytes > cfg.host_budget:
            raise ConfigError(
                f"memory.host_budget: the retrieval index lives in host RAM (faiss on the CPU) and needs "
                f"{format_bytes(host_reserve)} for the {rows} blocks host and disk can hold, plus one block "
                f"({format_bytes(per_block_bytes)}); raise host_budget or use memory.index torch")
    capacity = max(0, cfg.device_budget - device_reserve) // bytes_per_token
    index_part = (f" plus {format_bytes(device_reserve)} of retrieval index and key summaries for the {rows} blocks "
                  "host and disk can hold") if device_reserve else ""
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
            f"({cfg.answer_tokens} tokens){' and retrieval slots' if retrieval else ''}{index_part} for {what}; "
            f"the minimum is {format_bytes(need * bytes_per_token + device_reserve)} with window_blocks={cfg.window_blocks}")
    if capacity < need:
        fit = max(0, (capacity - base - 2 * compress_min) // block - 1)
        raise ConfigError(
            f"memory.window_blocks: a window of {cfg.window_blocks} blocks does not fit in "
            f"memory.device_budget {format_bytes(cfg.device_budget)} for {what}; at most {fit} fit, "
            f"or raise device_budget to {format_bytes(need * bytes_per_token + device_reserve)}")
    if cfg.policy in RETRIEVING:
        tiers = [t for t in (cfg.host_budget, cfg.disk_budget) if t > 0]
        if not tiers:
            raise ConfigError(f"memory.host_budget: {cfg.policy} offloads blocks leaving the window, but host_budget and "
                              f"disk_budget are both 0; give at least {format_bytes(per_block_bytes)}")
        for name, value in (("host_budget", cfg.host_budget), ("disk_budget", cfg.disk_budget)):
            if 0 < value < per_block_bytes:
                raise ConfigError(f"memory.{name}: {format_bytes(value)} cannot hold one block of {what}; "
                                  f"use 0 to disable the tier or at least {format_bytes(per_block_bytes)}")
    if cfg.policy in ("infinipot", "streammem"):
        memory = (capacity - fixed) // 2
        return DevicePlan(bytes_per_token, block, fixed + memory, fixed, memory, retrieval)
    return DevicePlan(bytes_per_token, block, capacity, fixed, 0, retrieval, rows, device_reserve, host_reserve)


def placement(blocks: list[Block], window: list[Block], next_position: int, base: int,
              cfg: MemoryConfig) -> list[int | None]:
    """Model positions for blocks brought in, in time order: their own (None; positions keep), or
    packed just before the window (contiguous, and for keep-mode blocks further back than rebase_limit)."""
    if not blocks:
        return []
    anchor = (window[0].pos_start - base) if window else next_position
    far = next_position - cfg.rebase_limit
    if cfg.positions == "keep" and all(b.pos_start - base >= far for b in blocks):
        return [None] * len(blocks)
    out, pos = [], anchor - sum(b.span for b in blocks)
    for b in blocks:
        out.append(pos)
        pos += b.span
    return out
