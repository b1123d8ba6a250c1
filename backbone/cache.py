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

import torch
from transformers.cache_utils import Cache, CacheLayerMixin


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
