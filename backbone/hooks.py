"""Capture pre-RoPE queries and keys of each decoder layer with forward hooks (no forward is replaced)."""

from __future__ import annotations

import torch


def attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The text decoder's self-attention modules, in layer order (dense and MoE Qwen3-VL alike)."""
    layers = model.model.language_model.layers
    return [layer.self_attn for layer in layers]


class QKCapture:
    """Context manager recording q_norm / k_norm outputs: pre-RoPE [tokens, heads, head_dim] per layer.

    Only batch item 0 is kept unless batch=True ([batch, tokens, heads, head_dim]). Tensors are
    detached references to this call's activations.
    """

    def __init__(self, model: torch.nn.Module, queries: bool = False, keys: bool = False, batch: bool = False) -> None:
        self.model, self.want_q, self.want_k, self.batch = model, queries, keys, batch
        n = len(attention_modules(model))
        self.queries: list[torch.Tensor | None] = [None] * n
        self.keys: list[torch.Tensor | None] = [None] * n
        self._handles: list = []

    def _hook(self, store: list, idx: int):
        def fn(_module, _inputs, output):
            store[idx] = output.detach() if self.batch else output[0].detach()
        return fn

    def __enter__(self) -> "QKCapture":
        for i, attn in enumerate(attention_modules(self.model)):
            if self.want_q:
                self._handles.append(attn.q_norm.register_forward_hook(self._hook(self.queries, i)))
            if self.want_k:
                self._handles.append(attn.k_norm.register_forward_hook(self._hook(self.keys, i)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
