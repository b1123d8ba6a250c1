"""FLOPs of one temporal patch through Qwen3-VL (ViT + merger + LLM prefill), from the model config.

Counts multiply-adds as 2 FLOPs, matmuls only (norms, activations and RoPE are ignored: < 1%).
Attention FLOPs depend on the context the patch attends to, so they take `context_tokens`.
"""

from __future__ import annotations


def vit_flops(vision_cfg, grid_h: int, grid_w: int) -> float:
    """One temporal patch through the vision tower: patch embed, blocks, merger and DeepStack mergers."""
    d, i, depth = vision_cfg.hidden_size, vision_cfg.intermediate_size, vision_cfg.depth
    n = grid_h * grid_w  # ViT tokens (16x16 patches); attention is within the temporal patch
    embed = 2 * n * (3 * 2 * 16 * 16) * d
    per_layer = 2 * n * (4 * d * d + 2 * d * i) + 2 * 2 * n * n * d
    merged = n // 4
    merger = 2 * merged * (4 * d * 4 * d + 4 * d * vision_cfg.out_hidden_size)
    mergers = (1 + len(vision_cfg.deepstack_visual_indexes)) * merger
    return float(embed + depth * per_layer + mergers)


def llm_flops(text_cfg, new_tokens: int, context_tokens: int) -> float:
    """`new_tokens` through the decoder attending to `context_tokens` earlier ones (plus causal among new)."""
    d, inter, layers = text_cfg.hidden_size, text_cfg.intermediate_size, text_cfg.num_hidden_layers
    hd = text_cfg.head_dim
    q, kv = text_cfg.num_attention_heads * hd, text_cfg.num_key_value_heads * hd
    proj = 2 * new_tokens * (d * q + 2 * d * kv + q * d)
    mlp = 2 * new_tokens * 3 * d * inter
    keys = context_tokens + (new_tokens + 1) / 2
    attn = 2 * 2 * new_tokens * keys * q
    return float(layers * (proj + mlp + attn))


def patch_flops(config, size: tuple[int, int], tokens_per_patch: int, context_tokens: int) -> dict:
    """FLOPs of one patch at frame `size` (H, W) whose segment has `tokens_per_patch` tokens."""
    vit = vit_flops(config.vision_config, size[0] // 16, size[1] // 16)
    llm = llm_flops(config.text_config, tokens_per_patch, context_tokens)
    return {"vit": vit, "llm": llm, "total": vit + llm}
