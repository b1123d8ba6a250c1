"""Host and disk tiers: byte-budgeted block stores that never exceed their budget, coldest-first order.

The device tier is the KV cache itself (backbone.cache.KVCache, capped at the device budget);
see memory/device.py. Blocks move device -> host -> disk (memory/store.py decides); the last enabled tier evicts.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from longwatch.memory.blockfiles import BlockFiles, FileRef


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
        self._order: OrderedDict[int, int] = OrderedDict()  # id -> nbytes, coldest first

    @property
    def enabled(self) -> bool:
        return self.stats.budget is None or self.stats.budget > 0

    def fits(self, nbytes: int) -> bool:
        return self.stats.budget is None or self.stats.bytes + nbytes <= self.stats.budget

    def can_ever_fit(self, nbytes: int) -> bool:
        return self.stats.budget is None or nbytes <= self.stats.budget

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
    """Blocks in RAM; pinned when CUDA is present so device<->host copies run asynchronously."""

    def __init__(self, budget: int | None, pin: bool) -> None:
        super().__init__("host", budget)
        self.pin = pin
        self._data: dict[int, torch.Tensor] = {}
        self._events: dict[int, torch.cuda.Event] = {}

    def put(self, block_id: int, kv: torch.Tensor) -> None:
        nbytes = kv.numel() * kv.element_size()
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
