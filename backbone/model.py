"""Backbone: a loaded Qwen3-VL with its prompt layout, cache factory and per-patch preprocessing."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

from longwatch.backbone.cache import KVCache
from longwatch.backbone.config import ModelConfig
from longwatch.backbone.decode import Sampling
from longwatch.backbone.loading import LoadedModel, load_model
from longwatch.backbone.preprocess import preprocess_patch, vision_tokens
from longwatch.backbone.prompt import PromptLayout, Segment


@dataclass(frozen=True)
class KVDims:
    num_layers: int
    kv_heads: int
    head_dim: int
    num_heads: int
    dtype: torch.dtype

    @property
    def bytes_per_token(self) -> int:
        """KV bytes one token costs across all layers (bf16 2B: 112 KiB, 8B: 144 KiB)."""
        return self.num_layers * 2 * self.kv_heads * self.head_dim * torch.finfo(self.dtype).bits // 8


class Backbone:
    """Everything the memory layer needs from the model, and nothing about video decoding."""

    def __init__(self, loaded: LoadedModel, cfg: ModelConfig | None = None, system_prompt: str | None = None) -> None:
        self.loaded = loaded
        self.cfg = cfg or ModelConfig(name=loaded.name)
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.device, self.dtype = loaded.device, loaded.dtype
        self.layout = PromptLayout(self.tokenizer, system_prompt)
        text = self.model.config.text_config
        self.dims = KVDims(text.num_hidden_layers, text.num_key_value_heads,
                           getattr(text, "head_dim", text.hidden_size // text.num_attention_heads),
                           text.num_attention_heads, self.dtype)
        self.rotary_emb = self.model.model.language_model.rotary_emb
        self.lock = threading.RLock()
        """Serialises model calls across streams: hooks and the model's buffers are shared state."""

    @classmethod
    def load(cls, cfg: ModelConfig, system_prompt: str | None = None) -> "Backbone":
        return cls(load_model(cfg), cfg, system_prompt)

    @property
    def name(self) -> str:
        return self.loaded.name

    @property
    def sampling(self) -> Sampling:
        return Sampling(self.cfg.temperature, self.cfg.top_p, self.cfg.max_new_tokens, self.cfg.seed)

    def new_cache(self, max_tokens: int | None = None) -> KVCache:
        d = self.dims
        return KVCache(d.num_layers, d.kv_heads, d.head_dim, self.dtype, self.device, max_tokens)

    def patch_segment(self, frames: np.ndarray, t_start: float, t_end: float, size: tuple[int, int],
                      t_mid: float | None = None) -> Segment:
        """Two RGB uint8 frames [2, H, W, 3] -> a patch segment at fixed per-frame `size`."""
        pixels, grid = preprocess_patch(frames, size)
        return self.layout.patch(pixels, grid, t_start, t_end, t_mid)

    def tokens_per_patch(self, size: tuple[int, int], t: float = 0.0) -> int:
        """Tokens one patch segment costs (timestamp text + vision start/end + vision tokens)."""
        from longwatch.backbone.prompt import timestamp_text

        return len(self.layout.encode_text(timestamp_text(t))) + 2 + vision_tokens(size)
