"""Retrieval indexes over per-layer block key summaries: faiss (GPU when present) or a torch matmul.

Both score every indexed block against one query per layer (inner product), which is what
question-driven retrieval needs: per-layer scores are normalised and combined before top-k.
Which backend ran is logged; `index: auto` falls back to torch, with a log line, when faiss is absent.
"""

from __future__ import annotations

import importlib.util
import logging
import os

import numpy as np
import torch

log = logging.getLogger(__name__)


class TorchIndex:
    """Summaries as one [N, layers, dim] float32 tensor on the compute device."""

    name = "torch"

    def __init__(self, num_layers: int, dim: int, device: torch.device | str = "cpu") -> None:
        self.num_layers, self.dim, self.device = num_layers, dim, torch.device(device)
        self._ids: list[int] = []
        self._rows: list[torch.Tensor] = []
        self._mat: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, block_id: int, summary: torch.Tensor) -> None:
        self._ids.append(block_id)
        self._rows.append(summary.to(self.device, torch.float32))
        self._mat = None

    def remove(self, block_id: int) -> None:
        i = self._ids.index(block_id)
        del self._ids[i], self._rows[i]
        self._mat = None

    def scores(self, query: torch.Tensor) -> tuple[list[int], torch.Tensor]:
        """query [layers, dim] -> (ids, scores [layers, N])."""
        if not self._ids:
            return [], torch.empty(self.num_layers, 0)
        if self._mat is None:
            self._mat = torch.stack(self._rows)  # [N, L, dim]
        s = torch.einsum("nld,ld->ln", self._mat, query.to(self.device, torch.float32))
        return list(self._ids), s.cpu()

    @property
    def nbytes(self) -> int:
        return len(self._ids) * self.num_layers * self.dim * 4


class FaissIndex:
    """One exact inner-product index per layer (IndexIDMap2 over IndexFlatIP), on GPU when faiss has one."""

    name = "faiss"

    def __init__(self, num_layers: int, dim: int, use_gpu: bool | None = None) -> None:
        import faiss

        self.faiss, self.num_layers, self.dim = faiss, num_layers, dim
        gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        self.gpu = bool(gpus) if use_gpu is None else use_gpu and bool(gpus)
        self._res = faiss.StandardGpuResources() if self.gpu else None
        self._ids: set[int] = set()
        self._layers = [self._new() for _ in range(num_layers)]
        if self.gpu:
            self.name = "faiss-gpu"

    def _new(self):
        idx = self.faiss.IndexIDMap2(self.faiss.IndexFlatIP(self.dim))
        return self.faiss.index_cpu_to_gpu(self._res, 0, idx) if self.gpu else idx

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, block_id: int, summary: torch.Tensor) -> None:
        vecs = summary.detach().to("cpu", torch.float32).numpy()
        ids = np.array([block_id], dtype=np.int64)
        for layer, index in enumerate(self._layers):
            index.add_with_ids(np.ascontiguousarray(vecs[layer: layer + 1]), ids)
        self._ids.add(block_id)

    def remove(self, block_id: int) -> None:
        sel = np.array([block_id], dtype=np.int64)
        for index in self._layers:
            index.remove_ids(sel)
        self._ids.discard(block_id)

    def scores(self, query: torch.Tensor) -> tuple[list[int], torch.Tensor]:
        n = len(self._ids)
        if n == 0:
            return [], torch.empty(self.num_layers, 0)
        q = query.detach().to("cpu", torch.float32).numpy()
        ids = sorted(self._ids)
        col = {b: i for i, b in enumerate(ids)}
        out = torch.empty(self.num_layers, n)
        for layer, index in enumerate(self._layers):
            d, found = index.search(np.ascontiguousarray(q[layer: layer + 1]), n)
            for dist, bid in zip(d[0], found[0]):
                if bid >= 0:
                    out[layer, col[int(bid)]] = float(dist)
        return ids, out

    @property
    def nbytes(self) -> int:
        return len(self._ids) * self.num_layers * self.dim * 4


def make_index(kind: str, num_layers: int, dim: int, device: torch.device | str = "cpu"):
    """Index backend by name (auto, faiss, torch); env LONGWATCH_INDEX overrides. Logs the choice."""
    kind = os.environ.get("LONGWATCH_INDEX", kind)
    has_faiss = importlib.util.find_spec("faiss") is not None
    if kind == "faiss" and not has_faiss:
        raise RuntimeError("memory.index is faiss but the faiss module is not installed "
                           "(pip install faiss-cpu, or faiss-gpu on CUDA machines)")
    if kind in ("faiss", "auto") and has_faiss:
        idx = FaissIndex(num_layers, dim, use_gpu=torch.device(device).type == "cuda")
        log.info("retrieval index: %s (%d layers x %d dims)", idx.name, num_layers, dim)
        return idx
    if kind == "auto":
        log.warning("retrieval index: faiss not installed, falling back to torch matmul")
    log.info("retrieval index: torch on %s", device)
    return TorchIndex(num_layers, dim, device)
