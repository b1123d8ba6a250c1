"""Question-driven block retrieval: by similarity (ReKV: key summaries, question queries, index, top-k) and by time.

Score of block b at layer l is the mean, over the question's tokens and query heads, of q . k_b
where k_b is the block's mean key for the query head's KV group (GQA). That mean of dot products
factorises into one inner product per layer between
    Q_l = concat_g( sum_{h in g} mean_t q_{t,h} ) / num_heads     and     K_l = concat_g( mean_i k_{i,g} ),
so an inner-product index over K_l answers it exactly. Layers are combined by z-scoring each
layer's scores over the candidates and averaging: raw dot products grow with the key norms of a
layer, and ReKV's unnormalised "cosine" lets a few layers dominate.

The index holds the summaries: faiss (GPU when present) or a torch matmul; both score every indexed
block against one query per layer (inner product). Which backend ran is logged; `index: auto` falls
back to torch, with a log line, when faiss is absent.

The times a question names ("at 01:30", "between 2:00 and 3:10", "5 minutes ago") are found as second
ranges (`parse_time_ranges`); the blocks covering them are always retrieved.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re

import numpy as np
import torch

from longwatch.backbone.inputs import apply_shift, shift_cos_sin


def block_summary(keys: list[torch.Tensor]) -> torch.Tensor:
    """Per-layer keys [tokens, kv_heads, head_dim] (pre-RoPE or cached) -> [layers, kv_heads * head_dim]."""
    return torch.stack([k.float().mean(0).reshape(-1) for k in keys])


def absolute_summary(summary: torch.Tensor, rotary: torch.nn.Module, base: int, kv_heads: int) -> torch.Tensor:
    """A summary [layers, kv_heads * head_dim] of cached keys (rotated for model positions) moved to
    absolute positions, so summaries taken before and after a re-basing compare."""
    cos, sin = shift_cos_sin(rotary, base, torch.float32, summary.device)
    return apply_shift(summary.view(summary.shape[0], kv_heads, -1), cos, sin).reshape(summary.shape)


def question_query(queries: list[torch.Tensor], kv_heads: int) -> torch.Tensor:
    """Per-layer queries [tokens, heads, head_dim] -> [layers, kv_heads * head_dim] (see module docstring)."""
    out = []
    for q in queries:
        t, h, d = q.shape
        grouped = q.float().mean(0).view(kv_heads, h // kv_heads, d).sum(1) / h
        out.append(grouped.reshape(-1))
    return torch.stack(out)


def combine_layers(scores: torch.Tensor) -> torch.Tensor:
    """scores [layers, N] -> [N]: mean over layers of per-layer z-scores."""
    if scores.shape[1] <= 1:
        return scores.mean(0)
    mu = scores.mean(1, keepdim=True)
    sd = scores.std(1, keepdim=True).clamp_min(1e-6)
    return ((scores - mu) / sd).mean(0)


def top_k(ids: list[int], combined: torch.Tensor, k: int, exclude: set[int] = frozenset()) -> list[tuple[int, float]]:
    """The k best (id, score) pairs, best first, skipping `exclude`."""
    order = torch.argsort(combined, descending=True).tolist()
    picked = []
    for i in order:
        if ids[i] in exclude:
            continue
        picked.append((ids[i], float(combined[i])))
        if len(picked) == k:
            break
    return picked


def spread(ids: list[int], limit: int) -> list[int]:
    """At most `limit` ids, evenly spaced over the list (keeps first and last)."""
    if len(ids) <= limit:
        return list(ids)
    if limit == 1:
        return [ids[len(ids) // 2]]
    step = (len(ids) - 1) / (limit - 1)
    return [ids[round(i * step)] for i in range(limit)]


log = logging.getLogger(__name__)


class TorchIndex:
    """Summaries in one preallocated [layers, capacity, dim] float32 tensor on the compute device.

    Adding writes a row in place (capacity doubles when full); removing moves the last row into the
    hole, so scoring is a single batched matrix-vector product over the first N rows.
    """

    name = "torch"

    def __init__(self, num_layers: int, dim: int, device: torch.device | str = "cpu") -> None:
        self.num_layers, self.dim, self.device = num_layers, dim, torch.device(device)
        self._ids: list[int] = []
        self._row: dict[int, int] = {}
        self._max_rows: int | None = None
        self._mat = torch.empty(num_layers, 64, dim, device=self.device)

    @property
    def entry_bytes(self) -> int:
        return self.num_layers * self.dim * 4

    @property
    def on_device(self) -> bool:
        return True  # on the compute device, whatever it is

    def limit(self, rows: int) -> None:
        """Never allocate more than `rows` rows (the plan's index_rows): growth stops there."""
        self._max_rows = max(1, rows)
        if self._mat.shape[1] > self._max_rows and len(self._ids) <= self._max_rows:
            self._mat = self._mat[:, : self._max_rows].clone()

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, block_id: int, summary: torch.Tensor) -> None:
        n = len(self._ids)
        if n == self._mat.shape[1]:
            rows = 2 * n if self._max_rows is None else min(2 * n, self._max_rows)
            if rows <= n:
                raise RuntimeError(f"retrieval index: {n} rows is its planned maximum (index_rows)")
            grown = torch.empty(self.num_layers, rows, self.dim, device=self.device)
            grown[:, :n] = self._mat
            self._mat = grown
        self._mat[:, n] = summary.to(self.device, torch.float32)
        self._ids.append(block_id)
        self._row[block_id] = n

    def remove(self, block_id: int) -> None:
        i, last = self._row.pop(block_id), len(self._ids) - 1
        if i != last:
            moved = self._ids[last]
            self._mat[:, i] = self._mat[:, last]
            self._ids[i] = moved
            self._row[moved] = i
        self._ids.pop()

    def get(self, block_id: int) -> torch.Tensor:
        """The summary [layers, dim] stored for `block_id` (a copy on the CPU)."""
        return self._mat[:, self._row[block_id]].cpu().clone()

    def scores(self, query: torch.Tensor) -> tuple[list[int], torch.Tensor]:
        """query [layers, dim] -> (ids, scores [layers, N])."""
        n = len(self._ids)
        if n == 0:
            return [], torch.empty(self.num_layers, 0)
        q = query.to(self.device, torch.float32).unsqueeze(-1)
        return list(self._ids), torch.bmm(self._mat[:, :n], q).squeeze(-1).cpu()

    @property
    def nbytes(self) -> int:
        return self._mat.numel() * 4


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
        if not self.gpu:
            return idx
        try:
            return self.faiss.index_cpu_to_gpu(self._res, 0, idx)
        except RuntimeError as e:  # an index type this faiss build cannot clone: stay correct on the CPU
            log.warning("faiss GPU index unavailable (%s); using the CPU index", e)
            self.gpu, self.name = False, "faiss"
            return idx

    def __len__(self) -> int:
        return len(self._ids)

    ENTRY_OVERHEAD = 48
    """Bytes per entry and layer beside the vector: the id (8) and IndexIDMap2's reverse map (~40)."""

    @property
    def entry_bytes(self) -> int:
        return self.num_layers * (self.dim * 4 + self.ENTRY_OVERHEAD)

    @property
    def on_device(self) -> bool:
        return self.gpu

    def limit(self, rows: int) -> None:
        """Flat storage grows one entry at a time: nothing to cap."""

    def get(self, block_id: int) -> torch.Tensor:
        """The summary [layers, dim] stored for `block_id`."""
        return torch.from_numpy(np.stack([index.reconstruct(int(block_id)) for index in self._layers]))

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
        ids = np.array(sorted(self._ids), dtype=np.int64)
        out = np.empty((self.num_layers, n), dtype=np.float32)
        for layer, index in enumerate(self._layers):
            d, found = index.search(np.ascontiguousarray(q[layer: layer + 1]), n)
            out[layer, np.searchsorted(ids, found[0])] = d[0]
        return ids.tolist(), torch.from_numpy(out)

    @property
    def nbytes(self) -> int:
        return len(self._ids) * self.entry_bytes


def index_placement(kind: str, device: torch.device | str = "cpu") -> tuple[str, bool]:
    """(backend, on the compute device) that `make_index(kind, ..., device)` would choose, without building it."""
    kind = os.environ.get("LONGWATCH_INDEX", kind)
    if kind in ("faiss", "auto") and importlib.util.find_spec("faiss") is not None:
        import faiss

        gpu = torch.device(device).type == "cuda" and getattr(faiss, "get_num_gpus", lambda: 0)() > 0
        return "faiss", gpu
    return "torch", True


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


_NUM_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
              "eight": 8, "nine": 9, "ten": 10, "fifteen": 15, "twenty": 20, "thirty": 30, "forty": 40,
              "forty-five": 45, "fifty": 50, "sixty": 60, "ninety": 90, "half a": 0.5, "half an": 0.5}
_UNIT = {"h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
         "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
         "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1}

_CLOCK = r"(?:\d{1,2}:)?\d{1,2}:\d{2}(?:\.\d+)?"
_AMOUNT = r"(?:\d+(?:\.\d+)?|" + "|".join(sorted(map(re.escape, _NUM_WORDS), key=len, reverse=True)) + r")"
_UNITS = r"(?:hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s)"
_DURATION = rf"{_AMOUNT}\s*{_UNITS}\b"
_POINT = rf"(?:{_CLOCK}|\d+(?:\.\d+)?\s*{_UNITS}\b)"

POINT_SLACK_S = 1.0
"""A named instant matches blocks within this many seconds of it (one 2-fps temporal patch)."""


def _amount(text: str) -> float:
    text = text.strip().lower()
    return float(text) if re.fullmatch(r"\d+(?:\.\d+)?", text) else float(_NUM_WORDS[text])


def parse_clock(text: str) -> float:
    """'1:30' -> 90, '01:02:03' -> 3723, '95.5 s' -> 95.5, '2 min' -> 120."""
    text = text.strip().lower()
    if ":" in text:
        secs = 0.0
        for part in text.split(":"):
            secs = secs * 60 + float(part)
        return secs
    m = re.fullmatch(rf"({_AMOUNT})\s*({_UNITS})", text)
    if not m:
        raise ValueError(f"not a time: {text!r}")
    return _amount(m.group(1)) * _UNIT[m.group(2)]


def _duration(text: str) -> float:
    m = re.fullmatch(rf"({_AMOUNT})\s*({_UNITS})", text.strip().lower())
    if not m:
        raise ValueError(f"not a duration: {text!r}")
    return _amount(m.group(1)) * _UNIT[m.group(2)]


def _duration_or_unit(text: str) -> float:
    """'2 minutes' -> 120; a bare unit ('minute') means one of it."""
    text = text.strip().lower()
    return float(_UNIT[text]) if text in _UNIT else _duration(text)


def parse_time_ranges(question: str, now: float | None = None) -> list[tuple[float, float]]:
    """Second ranges named by `question`, relative to stream start; `now` anchors "ago" and "last".

    Points become [t - 1, t + 1]. Ranges: "between A and B", "from A to B", "A-B", "in the first D",
    "in the last D", "D ago", "at A", bare clock times. Unparseable text yields [].
    """
    q = question.lower()
    out: list[tuple[float, float]] = []
    taken: list[tuple[int, int]] = []

    def take(m: re.Match) -> bool:
        if any(a < m.end() and m.start() < b for a, b in taken):
            return False
        taken.append((m.start(), m.end()))
        return True

    for m in re.finditer(rf"\b(?:between|from)\s+({_POINT})\s+(?:and|to|until|till)\s+({_POINT})", q):
        if take(m):
            a, b = parse_clock(m.group(1)), parse_clock(m.group(2))
            out.append((min(a, b), max(a, b)))
    for m in re.finditer(rf"({_CLOCK})\s*(?:-|–|to)\s*({_CLOCK})", q):
        if take(m):
            a, b = parse_clock(m.group(1)), parse_clock(m.group(2))
            out.append((min(a, b), max(a, b)))
    for m in re.finditer(rf"\b(?:in|during|within|over)\s+the\s+first\s+({_DURATION}|{_UNITS})", q):
        if take(m):
            out.append((0.0, _duration_or_unit(m.group(1))))
    for m in re.finditer(rf"\b(?:in|during|within|over)\s+the\s+(?:last|past|previous)\s+({_DURATION}|{_UNITS})", q):
        if take(m) and now is not None:
            out.append((max(0.0, now - _duration_or_unit(m.group(1))), now))
    for m in re.finditer(rf"\b({_DURATION})\s+ago\b", q):
        if take(m) and now is not None:
            t = max(0.0, now - _duration(m.group(1)))
            out.append((max(0.0, t - POINT_SLACK_S), t + POINT_SLACK_S))
    for m in re.finditer(r"\b(?:at|around|near|by)\s+(?:minute|min)\s+(\d+(?:\.\d+)?)\b", q):
        if take(m):
            t = float(m.group(1)) * 60
            out.append((t, t + 60))
    for m in re.finditer(rf"(?:\bat|\baround|\bnear|\bby|\bafter|\bbefore|^|\s|\()\s*({_POINT})", q):
        span = (m.start(1), m.end(1))
        if any(a < span[1] and span[0] < b for a, b in taken):
            continue
        text = m.group(1)
        if ":" not in text and not re.search(r"\b(at|around|near|by)\s*$", q[: m.start(1)]):
            continue  # bare "5 seconds" without "at" is a duration, not a time
        taken.append(span)
        t = parse_clock(text)
        out.append((max(0.0, t - POINT_SLACK_S), t + POINT_SLACK_S))
    return out
