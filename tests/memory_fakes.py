"""A fake Qwen3-VL for memory tests: real tokenizer, layout and rotary module, random K/V in ~1 ms per patch.

Shaped like the real model where memory/ touches it: model.config.text_config,
model.model.language_model.{layers[i].self_attn.{q_norm,k_norm}, rotary_emb} and its hidden states (for
Backbone.embed_text), and a forward that writes K/V through the cache's `update` and returns logits.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from longwatch.backbone.loading import LoadedModel
from longwatch.backbone.model import Backbone
from longwatch.backbone.presets import preset_config
from longwatch.backbone.tokenizer import load_offline_tokenizer

VOCAB = 151936


class _Attn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q_norm, self.k_norm = nn.Identity(), nn.Identity()


class _Layer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.self_attn = _Attn()


class _Inner(nn.Module):
    """Stands for Qwen3VLModel: writes random K/V for every token through the cache's update."""

    def __init__(self, outer: "FakeModel") -> None:
        super().__init__()
        self.outer = [outer]  # not a submodule: avoids a reference cycle in module traversal

    def forward(self, input_ids, past_key_values=None, **_):
        o = self.outer[0]
        n = input_ids.shape[1]
        for i, layer in enumerate(self.language_model.layers):
            layer.self_attn.q_norm(torch.randn(1, n, o.heads, o.head_dim, generator=o.gen))
            k = layer.self_attn.k_norm(torch.randn(1, n, o.kv_heads, o.head_dim, generator=o.gen))
            v = torch.randn(1, n, o.kv_heads, o.head_dim, generator=o.gen)
            past_key_values.update(k.transpose(1, 2), v.transpose(1, 2), i)


class _LanguageModel(nn.Module):
    """Stands for the text model where Backbone.embed_text reads it: hidden states that depend on the token ids."""

    def forward(self, input_ids, **_):
        table = torch.Generator().manual_seed(7)
        rows = torch.randn(512, 32, generator=table)
        return SimpleNamespace(last_hidden_state=rows[input_ids % 512])


class FakeModel(nn.Module):
    def __init__(self, layers: int = 2, heads: int = 4, kv_heads: int = 2, head_dim: int = 32, seed: int = 0) -> None:
        super().__init__()
        from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextRotaryEmbedding

        cfg = preset_config("tiny")
        cfg.text_config.num_hidden_layers = layers
        self.config = cfg
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        lm = _LanguageModel()
        lm.layers = nn.ModuleList([_Layer() for _ in range(layers)])
        lm.rotary_emb = Qwen3VLTextRotaryEmbedding(cfg.text_config)
        self.model = _Inner(self)
        self.model.language_model = lm
        self.anchor = nn.Parameter(torch.zeros(1))
        self.gen = torch.Generator().manual_seed(seed)
        self._logits = torch.zeros(1, 1, VOCAB)
        self._logits[..., 151645] = 1.0  # <|im_end|>: answers end at once

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def forward(self, input_ids, past_key_values=None, logits_to_keep=1, **_):
        self.model(input_ids, past_key_values=past_key_values)
        keep = input_ids.shape[1] if logits_to_keep == 0 else logits_to_keep
        return SimpleNamespace(logits=self._logits.expand(1, keep, VOCAB))


def fake_backbone(layers: int = 2) -> Backbone:
    model = FakeModel(layers=layers)
    loaded = LoadedModel(model=model, tokenizer=load_offline_tokenizer(), name="fake", device=torch.device("cpu"),
                         dtype=torch.float32, attn="sdpa", is_preset=True)
    return Backbone(loaded)
