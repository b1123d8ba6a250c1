"""The tiers a block lives in: device (the KV cache's live blocks plus the compressed store beside it),
host RAM and disk. Each holds what it is told and keeps its byte accounting; host and disk never exceed
their budget and keep a coldest-first order. memory/store.py decides every move
(device -> host -> disk; the last enabled tier evicts).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from longwatch.backbone.cache import KVCache
from longwatch.memory.block import Block
from longwatch.memory.blockfiles import BlockFiles, FileRef


class Index(Protocol):
    """What the tiers read of a retrieval index (memory/retrieval.py)."""

    name: str
    on_device: bool
    nbytes: int

    def __len__(self) -> int: ...


class OverBudget(RuntimeError):
    """Adding the block would take the tier over its budget (callers make room first)."""


@dataclass
class TierStats:
    name: str
    budget: int | None
    bytes: int = 0
    peak: int = 0
    blocks: int = 0

    def as_dict(self) -> dict:
        return {"bytes": self.bytes, "peak": self.peak, "budget": self.budget, "blocks": self.blocks}


class Tier:
    """Byte accounting plus an LRU order (coldest first) over block ids."""

    def __init__(self, name: str, budget: int | None) -> None:
        self.stats = TierStats(name, budget)
        self.reserve = 0
        """Bytes of the budget held back for something beside the blocks (the host tier's index)."""
        self._order: OrderedDict[int, int] = OrderedDict()  # id -> nbytes, coldest first

    @property
    def enabled(self) -> bool:
        return self.stats.budget is None or self.stats.budget > 0

    def fits(self, nbytes: int) -> bool:
        return self.stats.budget is None or self.stats.bytes + nbytes <= self.stats.budget - self.reserve

    def can_ever_fit(self, nbytes: int) -> bool:
        return self.stats.budget is None or nbytes <= self.stats.budget - self.reserve

    def coldest(self) -> int | None:
        return next(iter(self._order), None)

    def touch(self, block_id: int) -> None:
        if block_id in self._order:
            self._order.move_to_end(block_id)

    def _account_add(self, block_id: int, nbytes: int) -> None:
        if not self.fits(nbytes):
            raise OverBudget(f"{self.stats.name} tier: {self.stats.bytes} + {nbytes} bytes > budget {self.stats.budget}")
        self._order[block_id] = nbytes
        self.stats.bytes += nbytes
        self.stats.blocks += 1
        self.stats.peak = max(self.stats.peak, self.stats.bytes)

    def _account_remove(self, block_id: int) -> None:
        nbytes = self._order.pop(block_id)
        self.stats.bytes -= nbytes
        self.stats.blocks -= 1

    def __contains__(self, block_id: int) -> bool:
        return block_id in self._order

    def ids(self) -> list[int]:
        return list(self._order)


class HostTier(Tier):
    """Blocks in RAM; pinned when CUDA is present so device<->host copies run asynchronously.

    Bytes count what the process holds: a pinned block costs its size rounded up to a power of two
    (`cost`: PyTorch's caching host allocator rounds every pinned allocation so), and `extra()` (the
    retrieval index when it lives in host RAM) counts beside the blocks; `reserve` bytes of the budget
    are held back for it (the plan's host_reserve), so blocks + index never pass the budget.
    """

    def __init__(self, budget: int | None, pin: bool) -> None:
        super().__init__("host", budget)
        self.pin = pin
        self.index: Index | None = None
        """The stream's retrieval index; counted here when it lives in host RAM (faiss on the CPU)."""
        self._data: dict[int, torch.Tensor] = {}
        self._events: dict[int, torch.cuda.Event] = {}

    def extra(self) -> int:
        """Bytes beside the blocks: the index when it lives in host RAM."""
        return self.index.nbytes if self.index is not None and not self.index.on_device else 0

    def cost(self, nbytes: int) -> int:
        """Bytes a block of `nbytes` takes in this tier."""
        return 1 << max(0, nbytes - 1).bit_length() if self.pin and nbytes else nbytes

    def track(self) -> None:
        self.stats.peak = max(self.stats.peak, self.stats.bytes + self.extra())

    def as_dict(self) -> dict:
        """Stats with the index counted: bytes = blocks + index."""
        extra = self.extra()
        d = self.stats.as_dict()
        d.update(bytes=self.stats.bytes + extra, index_bytes=extra, peak=max(self.stats.peak, self.stats.bytes + extra))
        return d

    def put(self, block_id: int, kv: torch.Tensor) -> None:
        nbytes = self.cost(kv.numel() * kv.element_size())
        self._account_add(block_id, nbytes)
        if kv.device.type == "cuda" and self.pin:
            host = torch.empty(kv.shape, dtype=kv.dtype, pin_memory=True)
            host.copy_(kv, non_blocking=True)
            ev = torch.cuda.Event()
            ev.record()
            self._events[block_id] = ev
        else:
            host = kv.detach().to("cpu", copy=True)
        self._data[block_id] = host

    def get(self, block_id: int) -> torch.Tensor:
        ev = self._events.pop(block_id, None)
        if ev is not None:
            ev.synchronize()
        return self._data[block_id]

    def pop(self, block_id: int) -> torch.Tensor:
        kv = self.get(block_id)
        del self._data[block_id]
        self._account_remove(block_id)
        return kv


class DiskTier(Tier):
    """Blocks as checksummed, memory-mapped files in one folder per stream."""

    def __init__(self, budget: int | None, folder: str | Path, files: BlockFiles | None = None) -> None:
        super().__init__("disk", budget)
        self.files = files or BlockFiles(folder, durable=False)
        self._refs: dict[int, FileRef] = {}

    def put(self, block_id: int, kv: torch.Tensor, ref: FileRef | None = None) -> FileRef:
        """Store `kv` (or adopt an existing file `ref` of the same block, written by the journal)."""
        nbytes = kv.numel() * kv.element_size() if ref is None else ref.nbytes
        self._account_add(block_id, nbytes)
        if ref is None:
            ref = self.files.write(f"tier-{block_id:09d}", kv)
        self._refs[block_id] = ref
        return ref

    def get(self, block_id: int) -> torch.Tensor:
        return self.files.read(self._refs[block_id])

    def pop(self, block_id: int, delete: bool = True) -> torch.Tensor | None:
        ref = self._refs.pop(block_id)
        self._account_remove(block_id)
        kv = None
        if delete and ref.path.startswith("blocks/tier-"):
            self.files.delete(ref)
        return kv

    def rebind(self, files: BlockFiles, refs: dict[int, FileRef]) -> None:
        """Hold the same blocks in another BlockFiles (a compacted journal's): `refs` for every held id."""
        if set(refs) != set(self._refs):
            raise ValueError("a rebind must name a file for every block the tier holds")
        self.files, self._refs = files, dict(refs)

    def ref(self, block_id: int) -> FileRef:
        return self._refs[block_id]


class DeviceTier:
    """The cache's live blocks in cache order, plus the compressed blocks kept on the device beside it.

    Layout: cache slots [prefix | sink blocks | recent window], in time order, so a block's offset is
    the sum of the token counts before it; the compressed store is one kv tensor per block
    [layers, 2, kv_heads, n, head_dim]. Bytes = the cache's allocation + the store's tensors + `extra()`
    (key summaries, a device-resident index); `peak` is the largest seen. This class does what it is told: BlockStore decides what moves.
    """

    def __init__(self, cache: KVCache, index: Index | None = None) -> None:
        self.cache = cache
        self.index = index
        """The stream's retrieval index; counted here when it lives on the device (torch, faiss-gpu)."""
        self.blocks: list[Block] = []
        self.memory: dict[int, torch.Tensor] = {}
        self.peak = 0

    @property
    def length(self) -> int:
        return sum(b.n_tokens for b in self.blocks)

    @property
    def nbytes(self) -> int:
        return (self.cache.allocated_bytes + sum(t.numel() * t.element_size() for t in self.memory.values())
                + self.extra())

    def extra(self) -> int:
        """Device bytes beside K/V: the device blocks' key summaries, and the index when it lives here."""
        summaries = sum(b.summary.numel() * b.summary.element_size() for b in self.blocks if b.summary is not None)
        return summaries + (self.index.nbytes if self.index is not None and self.index.on_device else 0)

    def track(self) -> None:
        """Record the peak (after anything that may have grown the cache or the store)."""
        self.peak = max(self.peak, self.nbytes)

    def offset(self, block: Block) -> int:
        off = 0
        for b in self.blocks:
            if b is block:
                return off
            off += b.n_tokens
        raise KeyError(block.id)

    def adopt_tail(self, block: Block) -> None:
        """Record a block whose tokens the model has just appended at the end of the cache."""
        if self.length + block.n_tokens != self.cache.length:
            raise RuntimeError(f"cache holds {self.cache.length} tokens, region expects {self.length + block.n_tokens}")
        self.blocks.append(block)

    def append(self, block: Block, kv: torch.Tensor) -> None:
        """Write a stored block's kv [layers, 2, kv_heads, n, head_dim] at the end and record it."""
        if kv.shape[3] != block.n_tokens:
            raise ValueError(f"block {block.id}: kv has {kv.shape[3]} tokens, metadata says {block.n_tokens}")
        self.cache.truncate(self.length)
        self.cache.append(kv.to(self.cache.device, self.cache.dtype))
        self.blocks.append(block)

    def read(self, block: Block) -> torch.Tensor:
        off = self.offset(block)
        return self.cache.read(off, off + block.n_tokens)

    def remove(self, block: Block) -> torch.Tensor:
        """Take a block out of the cache; returns a copy of its kv."""
        off = self.offset(block)
        kv = self.cache.read(off, off + block.n_tokens)
        self.cache.remove(off, off + block.n_tokens)
        self.blocks.remove(block)
        return kv

    def rotate_from(self, start: int, cos: torch.Tensor, sin: torch.Tensor) -> None:
        """Rotate the live keys from slot `start` on by a position shift (re-basing the window)."""
        self.cache.rotate_keys_(start, self.length, cos, sin)

    def keys(self, block: Block) -> list[torch.Tensor]:
        """Per-layer cached (rotated) keys of a block: [n, kv_heads, head_dim] views."""
        off = self.offset(block)
        return [self.cache.keys_view(i, off, off + block.n_tokens).transpose(0, 1) for i in range(self.cache.num_layers)]

    def vision_kv(self, block: Block) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of a block's vision keys and values: [layers, kv_heads, n_vis, head_dim] each."""
        off = self.offset(block) + block.n_head
        ks = torch.stack([self.cache.keys_view(i, off, off + block.n_vis) for i in range(self.cache.num_layers)])
        vs = torch.stack([self.cache.values_view(i, off, off + block.n_vis) for i in range(self.cache.num_layers)])
        return ks, vs

    def stats(self, budget: int | None) -> dict:
        patches = sum(1 for b in self.blocks if b.kind == "patch")
        return {"bytes": self.nbytes, "live": self.length * self.cache.bytes_per_token, "peak": self.peak,
                "budget": budget, "blocks": patches + len(self.memory), "memory_blocks": len(self.memory)}

    def visible_mask(self, hidden: list[Block]) -> torch.Tensor | None:
        """[cache length] bool, False at the slots of `hidden` blocks (None when nothing is hidden)."""
        if not hidden:
            return None
        visible = torch.ones(self.cache.length, dtype=torch.bool)
        for b in hidden:
            off = self.offset(b)
            visible[off: off + b.n_tokens] = False
        return visible


ZERO = {"bytes": 0, "peak": 0, "budget": None, "blocks": 0}


def empty_stats(policy: str) -> dict:
    """The stats of a stream that has not been read yet (another thread holds it)."""
    return {"policy": policy, "patches": 0, "t_last": 0.0, "evicted": 0, "rebases": 0,
            "tiers": {"device": dict(ZERO, live=0), "host": dict(ZERO), "disk": dict(ZERO)},
            "next_position": 0, "base": 0, "max_distance": 0, "index": None, "plan": None}


def stream_stats(policy: str, st, device: DeviceTier, host: HostTier, disk: DiskTier | None, index: Index | None,
                 plan, device_budget: int | None) -> dict:
    """A stream's stats: its counters (a StreamState), each tier's bytes, peak, budget and blocks, its index."""
    tiers = {"device": device.stats(device_budget), "host": host.as_dict(),
             "disk": disk.stats.as_dict() if disk else dict(ZERO, budget=0)}
    return {"policy": policy, "patches": st.patches, "t_last": st.t_last, "tiers": tiers, "evicted": st.evicted,
            "rebases": st.rebases, "next_position": st.next_position, "base": st.base,
            "max_distance": st.max_distance,
            "index": {"backend": index.name, "blocks": len(index), "bytes": index.nbytes} if index is not None else None,
            "plan": plan.as_dict() if plan else None}
