"""KVCache: a transformers `Cache` whose layers are preallocated buffers that memory policies edit in place.

Layout per layer: keys and values [batch, kv_heads, capacity, head_dim] (batch is 1 except for the
transient cache of a multi-stream forward) (GQA heads not repeated), RoPE
already applied to keys; the first `length` slots are live. The model appends through `update`,
which writes in place and returns views (no reallocation per call, unlike DynamicCache, whose
`torch.cat` makes long streams quadratic). Memory code moves blocks in and out with `append`,
`read`, `remove` and `truncate`; capacity doubles on demand up to `max_tokens`, past which an
append raises `CacheFull` instead of silently growing past the device budget.
"""

from __future__ import annotations

import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

if TYPE_CHECKING:
    from longwatch.backbone.model import KVDims


class CacheFull(RuntimeError):
    """An append would exceed the cache's token capacity (its share of the device budget)."""


class BufferLayer(CacheLayerMixin):
    is_croppable = True

    def __init__(self, kv_heads: int, head_dim: int, dtype: torch.dtype, device: torch.device,
                 max_tokens: int | None = None, initial: int = 256, batch: int = 1) -> None:
        super().__init__()
        self.kv_heads, self.head_dim, self.dtype, self.device = kv_heads, head_dim, dtype, torch.device(device)
        self.max_tokens, self.batch = max_tokens, batch
        cap = initial if max_tokens is None else min(initial, max_tokens)
        self._k = torch.empty(batch, kv_heads, cap, head_dim, dtype=dtype, device=self.device)
        self._v = torch.empty_like(self._k)
        self.length = 0
        self.is_initialized = True
        self.keys, self.values = self._k[:, :, :0], self._v[:, :, :0]

    @property
    def capacity(self) -> int:
        return self._k.shape[2]

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        pass  # buffers exist from construction

    def _ensure(self, extra: int) -> None:
        need = self.length + extra
        if self.max_tokens is not None and need > self.max_tokens:
            raise CacheFull(f"cache needs {need} tokens, capacity is {self.max_tokens}")
        if need <= self.capacity:
            return
        cap = self.capacity
        while cap < need:
            cap *= 2
        if self.max_tokens is not None:
            cap = min(cap, self.max_tokens)
        k = torch.empty(self.batch, self.kv_heads, cap, self.head_dim, dtype=self.dtype, device=self.device)
        v = torch.empty_like(k)
        k[:, :, : self.length] = self._k[:, :, : self.length]
        v[:, :, : self.length] = self._v[:, :, : self.length]
        self._k, self._v = k, v

    def _refresh(self) -> None:
        self.keys, self.values = self._k[:, :, : self.length], self._v[:, :, : self.length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        n = key_states.shape[-2]
        self._ensure(n)
        self._k[:, :, self.length: self.length + n] = key_states
        self._v[:, :, self.length: self.length + n] = value_states
        self.length += n
        self._refresh()
        return self.keys, self.values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return -1 if self.max_tokens is None else self.max_tokens

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative number of tokens to remove")
        self.truncate(self.length + tokens_to_remove)

    def truncate(self, length: int) -> None:
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot truncate a {self.length}-token layer to {length}")
        self.length = length
        self._refresh()

    def remove(self, start: int, end: int) -> None:
        """Delete slots [start, end) by shifting the tail left.

        The tail moves in chunks of at least 256 tokens, ascending; a chunk longer than the gap
        could overlap its destination, so it is staged through a copy of at most the chunk size
        (never a temporary the size of the whole tail).
        """
        if not 0 <= start <= end <= self.length:
            raise ValueError(f"cannot remove [{start}, {end}) from a {self.length}-token layer")
        gap = end - start
        if gap == 0:
            return
        chunk = max(gap, 256)
        src = end
        while src < self.length:
            n = min(chunk, self.length - src)
            k, v = self._k[:, :, src: src + n], self._v[:, :, src: src + n]
            if n > gap:
                k, v = k.clone(), v.clone()
            self._k[:, :, src - gap: src - gap + n] = k
            self._v[:, :, src - gap: src - gap + n] = v
            src += n
        self.length -= gap
        self._refresh()

    def reset(self) -> None:
        self.truncate(0)

    def set_max_tokens(self, max_tokens: int | None) -> None:
        """Change the cap; shrinks the buffers if they are already larger (live tokens must fit)."""
        if max_tokens is not None and self.length > max_tokens:
            raise CacheFull(f"{self.length} live tokens exceed the new capacity {max_tokens}")
        self.max_tokens = max_tokens
        if max_tokens is not None and self.capacity > max_tokens:
            self._k = self._k[:, :, :max_tokens].clone()
            self._v = self._v[:, :, :max_tokens].clone()
            self._refresh()


class KVCache(Cache):
    """Per-layer `BufferLayer`s; see the module docstring for the layout."""

    def __init__(self, num_layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device | str, max_tokens: int | None = None, batch: int = 1,
                 initial: int = 256) -> None:
        layers = [BufferLayer(kv_heads, head_dim, dtype, torch.device(device), max_tokens, initial, batch)
                  for _ in range(num_layers)]
        super().__init__(layers=layers)
        self.num_layers, self.kv_heads, self.head_dim = num_layers, kv_heads, head_dim
        self.dtype, self.device, self.max_tokens = dtype, torch.device(device), max_tokens

    @property
    def length(self) -> int:
        return self.layers[0].length

    @property
    def bytes_per_token(self) -> int:
        return self.num_layers * 2 * self.kv_heads * self.head_dim * torch.finfo(self.dtype).bits // 8

    @property
    def allocated_bytes(self) -> int:
        return sum(layer.capacity for layer in self.layers) * self.bytes_per_token // self.num_layers

    def set_max_tokens(self, max_tokens: int | None) -> None:
        for layer in self.layers:
            layer.set_max_tokens(max_tokens)
        self.max_tokens = max_tokens

    def append(self, kv: torch.Tensor) -> None:
        """Write stored tokens kv [num_layers, 2, kv_heads, n, head_dim] after the live slots."""
        for i, layer in enumerate(self.layers):
            layer.update(kv[i, 0].unsqueeze(0), kv[i, 1].unsqueeze(0))

    def copy(self, capacity: int) -> "KVCache":
        """A private copy of the live slots, with room for `capacity` tokens (an answer decoded aside)."""
        out = KVCache(self.num_layers, self.kv_heads, self.head_dim, self.dtype, self.device, initial=capacity)
        for src, dst in zip(self.layers, out.layers):
            dst.update(src.keys, src.values)
        return out

    def read(self, start: int, end: int) -> torch.Tensor:
        """A copy of slots [start, end): [num_layers, 2, kv_heads, n, head_dim]."""
        return torch.stack([torch.stack([layer.keys[0, :, start:end], layer.values[0, :, start:end]])
                            for layer in self.layers])

    def keys_view(self, layer: int, start: int, end: int) -> torch.Tensor:
        """View of the cached (rotated) keys of one layer: [kv_heads, n, head_dim]."""
        return self.layers[layer].keys[0, :, start:end]

    def values_view(self, layer: int, start: int, end: int) -> torch.Tensor:
        return self.layers[layer].values[0, :, start:end]

    def remove(self, start: int, end: int) -> None:
        for layer in self.layers:
            layer.remove(start, end)

    def truncate(self, length: int) -> None:
        for layer in self.layers:
            layer.truncate(length)

    def rotate_keys_(self, start: int, end: int, cos: torch.Tensor, sin: torch.Tensor) -> None:
        """Rotate keys in [start, end) in place by a RoPE shift given as cos/sin [head_dim] (see backbone.inputs)."""
        from longwatch.backbone.inputs import apply_shift

        for layer in self.layers:
            k = layer.keys[0, :, start:end]  # a view of the live slots: rotated in place
            k.copy_(apply_shift(k, cos, sin))


class _RowLayer(CacheLayerMixin):
    """One layer of AnswerRows: [rows, kv_heads, cols, head_dim] buffers; `update` writes each row's new token
    at that row's own column (`cols`, set by the step) and returns the rows up to `span` columns."""

    is_croppable = False

    def __init__(self, k: torch.Tensor, v: torch.Tensor, cols: torch.Tensor, span: int) -> None:
        super().__init__()
        self._k, self._v, self.cols, self.span, self.is_initialized = k, v, cols, span, True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        pass

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        rows = torch.arange(key_states.shape[0], device=key_states.device)
        self._k[rows, :, self.cols] = key_states[:, :, 0]
        self._v[rows, :, self.cols] = value_states[:, :, 0]
        return self._k[: len(rows), :, : self.span], self._v[: len(rows), :, : self.span]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.span, 0

    def get_seq_length(self) -> int:
        return self.span - 1

    def get_max_length(self) -> int:
        return self._k.shape[2]


@dataclass
class AnswerRow:
    """An answer's place in AnswerRows: its row, its length there, and how its steps come back."""

    index: int
    length: int
    capacity: int
    ready: threading.Event = field(default_factory=threading.Event)
    outcome: object = None
    """After `ready`: its logits [vocab], an exception, or LEAD (this thread runs the next batched step)."""


LEAD = object()


# Written by hand: no library batches decode steps of callers that each own their loop and KV prefix (vLLM and
# TGI own the request and its scheduler; transformers' generate batches one call's prompts). A one-token
# forward reads all the weights for 1 row as for 8: answers taking turns on the model are N times slower each.
class AnswerRows:
    """Concurrent answers decoding in one batched forward per token.

    Each answer copies its stream's live cache into a row (left-aligned, zero-padded: a masked key still meets
    its value in the weighted sum, and 0 * uninitialised NaN is NaN), then calls `step` once per token. The
    first answer to call a step that finds none running leads it: it waits up to `gather_s` for every other
    row's token, takes the model lock (`turn`) for one forward of all rows, and hands each row its logits. Row
    i's new K/V go to its own column; a 4D mask shows each row its own prefix (or its `visible` slots), its
    generated tokens and nothing else, and positions are each row's own, so a row's logits equal decoding it
    alone (tested). Rows without a token this step (their thread is still streaming text) compute a throwaway
    token at their next column, overwritten by their next real one. The buffers hold at most `budget` bytes
    (`join` returns None past it: that answer decodes alone) and are freed when the last row leaves.
    """

    def __init__(self, model: torch.nn.Module, dims: KVDims, device: torch.device, turn: AbstractContextManager,
                 gather_s: float = 0.002) -> None:
        self.model, self.dims, self.device, self.turn, self.gather_s = model, dims, torch.device(device), turn, gather_s
        self._cond = threading.Condition()
        self._mutex = threading.Lock()
        """Held by a forward and by join's copy: a row is never written while a step reads the buffers."""
        self._rows: dict[int, AnswerRow] = {}
        self._pending: dict[int, tuple[torch.Tensor, int]] = {}
        self._busy = False
        self._k: list[torch.Tensor] = []
        self._v: list[torch.Tensor] = []
        self._mask = torch.zeros(0, 0, dtype=torch.bool, device=self.device)
        self.steps = self.rows_max = self.batched_tokens = 0

    @property
    def allocated_bytes(self) -> int:
        return self._mask.numel() * self.dims.bytes_per_token

    def join(self, cache: KVCache, new_tokens: int, budget: int, visible: torch.Tensor | None = None) -> AnswerRow | None:
        """A row holding a copy of `cache`'s live slots with room for `new_tokens`, or None when the buffers
        (grown to hold it: one more row at most, columns in steps of 256) would pass `budget` bytes."""
        n, d = cache.length, self.dims
        with self._mutex:
            with self._cond:
                index = min(set(range(len(self._rows) + 1)) - set(self._rows))
            r0, c0 = self._mask.shape
            rows, cols = max(r0, index + 1), max(c0, -(-(n + new_tokens + 1) // 256) * 256)
            if rows * cols * d.bytes_per_token > budget:
                return None
            if (rows, cols) != (r0, c0):  # grow; the live rows are copied over
                for bufs in (self._k, self._v):
                    for i in range(d.num_layers):
                        new = torch.zeros(rows, d.kv_heads, cols, d.head_dim, dtype=d.dtype, device=self.device)
                        if r0:
                            new[:r0, :, :c0] = bufs[i]
                        bufs[i:i + 1] = [new]
                self._mask = torch.nn.functional.pad(self._mask, (0, cols - c0, 0, rows - r0))
            for i, layer in enumerate(cache.layers):
                for buf, src in ((self._k[i], layer.keys), (self._v[i], layer.values)):
                    buf[index].zero_()
                    buf[index, :, :n] = src[0]
            self._mask[index] = False
            self._mask[index, :n] = True if visible is None else visible.to(self.device).bool()
            row = AnswerRow(index, n, n + new_tokens + 1)
            with self._cond:
                self._rows[index] = row
                self.rows_max = max(self.rows_max, len(self._rows))
        return row

    def leave(self, row: AnswerRow) -> None:
        """The answer is done; the last to leave frees the buffers."""
        with self._mutex:
            with self._cond:
                self._rows.pop(row.index, None)
                self._pending.pop(row.index, None)
                self._cond.notify_all()
                empty = not self._rows
            if empty:
                self._k, self._v, self._mask = [], [], self._mask[:0, :0]

    def step(self, row: AnswerRow, token: torch.Tensor, position: int) -> torch.Tensor:
        """Feed `token` (0-d, on the device) at `position` to this row; its logits [vocab] once a batched
        forward has run it."""
        if row.length >= row.capacity - 1:
            raise ValueError(f"answer row {row.index} is full ({row.capacity - 1} tokens)")
        with self._cond:
            self._pending[row.index] = token, position
            row.ready.clear()
            lead = not self._busy
            self._busy = True
            self._cond.notify_all()
        if not lead:
            row.ready.wait()
        if lead or row.outcome is LEAD:
            self._lead()
        out, row.outcome = row.outcome, None
        if isinstance(out, BaseException):
            raise out
        return out

    def _lead(self) -> None:
        deadline = time.monotonic() + self.gather_s
        with self._cond:
            while set(self._rows) - set(self._pending) and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
            batch = dict(self._pending)
            self._pending.clear()
            rows = {i: self._rows[i] for i in batch}
        try:
            with self._mutex, self.turn:
                out = self._forward(batch, rows)
        except Exception as e:  # every row of this step gets it
            out = dict.fromkeys(batch, e)
        with self._cond:
            nxt = next(iter(self._pending), None)  # a token that came during this forward: its thread leads next
            self._busy = nxt is not None
            for r, outcome in [(r, out[i]) for i, r in rows.items()] + ([(self._rows[nxt], LEAD)] if self._busy else []):
                r.outcome = outcome
                r.ready.set()

    @torch.no_grad()
    def _forward(self, batch: dict[int, tuple[torch.Tensor, int]], rows: dict[int, AnswerRow]) -> dict[int, torch.Tensor]:
        with self._cond:
            live = dict(self._rows)
        hi = max(live) + 1
        lens = [live[i].length if i in live else 0 for i in range(hi)]
        lengths, span = torch.tensor(lens, device=self.device), max(lens) + 1  # no device sync per step
        order = sorted(batch)
        idx = torch.tensor(order, device=self.device)
        ids = torch.full((hi, 1), 151643, dtype=torch.long, device=self.device)  # throwaway rows: <|endoftext|>
        ids[idx, 0] = torch.stack([batch[i][0].reshape(()) for i in order])
        pos = torch.zeros(3, hi, 1, dtype=torch.long, device=self.device)
        pos[:, idx, 0] = torch.tensor([batch[i][1] for i in order], device=self.device)
        mask = self._mask[:hi, :span].clone()
        mask[torch.arange(hi, device=self.device), lengths] = True
        mask = mask[:, None, None, :]
        if self.model.config._attn_implementation == "eager":  # noqa: SLF001 - the backend, as key_mask_4d reads it
            mask = torch.where(mask, 0.0, torch.finfo(self.dims.dtype).min).to(self.dims.dtype)
        cache = Cache(layers=[_RowLayer(k, v, lengths, span) for k, v in zip(self._k, self._v)])
        out = self.model(input_ids=ids, position_ids=pos, mm_token_type_ids=torch.zeros_like(ids, dtype=torch.int32),
                         past_key_values=cache, use_cache=True, logits_to_keep=1, attention_mask=mask)
        for i, r in rows.items():
            self._mask[i, r.length] = True
            r.length += 1
        self.steps += 1
        self.batched_tokens += len(batch)
        return {i: out.logits[i, -1].float() for i in batch}
