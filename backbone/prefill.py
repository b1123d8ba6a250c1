"""Streaming prefill: feed segments (prefix, temporal patches, question) to Qwen3-VL with explicit positions.

Every call passes 3-row M-RoPE positions (segment positions + the running offset) and
mm_token_type_ids, so the model never falls back to its stateful `rope_deltas`; pixel values go in
with the call, so DeepStack features are injected at this call's visual tokens. Chunks must hold
whole temporal patches (the ViT attends within one temporal patch, so per-chunk encoding is exact).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache

from longwatch.backbone.prompt import Segment


@dataclass
class PrefillResult:
    logits: torch.Tensor
    """[n, vocab] float32 logits for the last `n` tokens (n = logits_to_keep, default 1)."""
    next_position: int
    """Position where the next segment starts (offset + sum of spans)."""
    positions: torch.Tensor
    """[3, L] absolute positions used for this call."""


def pack(segments: list[Segment], offset: int) -> tuple[dict, torch.Tensor, int]:
    """Concatenate segments into model inputs with absolute positions starting at `offset`."""
    ids, types, pos, pixels, grids = [], [], [], [], []
    cur = offset
    for seg in segments:
        ids.append(seg.input_ids)
        types.append(seg.token_types)
        pos.append(seg.positions + cur)
        cur += seg.span
        if seg.pixel_values is not None:
            pixels.append(seg.pixel_values)
            grids.append(seg.grid_thw)
    positions = torch.cat(pos, dim=1)
    inputs = {
        "input_ids": torch.cat(ids)[None],
        "mm_token_type_ids": torch.cat(types)[None],
        "position_ids": positions[:, None, :],
    }
    if pixels:
        inputs["pixel_values_videos"] = torch.cat(pixels)
        inputs["video_grid_thw"] = torch.tensor(grids, dtype=torch.long)
    return inputs, positions, cur


def key_mask_4d(model: torch.nn.Module, visible: torch.Tensor, new: int) -> torch.Tensor:
    """A [1, 1, new, past + new] attention mask: cached slots where `visible` [past] is True, then causal.

    Boolean for SDPA (True = attend), additive float for eager; flash-attention-2 takes no such mask.
    transformers passes a 4D mask through unchanged, so this hides cached slots without touching the model.
    """
    impl = model.config._attn_implementation  # noqa: SLF001 - transformers exposes the backend only so
    if impl not in ("sdpa", "eager"):
        raise ValueError(f"hiding cached slots needs attn sdpa or eager, not {impl}")
    past = visible.numel()
    mask = torch.ones(new, past + new, dtype=torch.bool, device=visible.device)
    mask[:, :past] = visible.bool()
    mask[:, past:] = torch.tril(mask[:, past:])
    mask = mask[None, None]
    if impl == "eager":
        dtype = next(model.parameters()).dtype
        mask = torch.where(mask, 0.0, torch.finfo(dtype).min).to(dtype)
    return mask


@torch.no_grad()
def prefill(model: torch.nn.Module, cache: Cache, segments: list[Segment], offset: int,
            logits_to_keep: int | None = 1, visible: torch.Tensor | None = None) -> PrefillResult:
    """Append `segments` to `cache` starting at position `offset`; return the last logits.

    `logits_to_keep=0` returns logits for every token (used by exactness tests); `None` skips the LM
    head (a forward run only for its cache or its captured queries: the 151,936-row head is the
    largest read of a short forward). `visible` [cache length] hides the cached slots where it is
    False from these tokens (see key_mask_4d).
    """
    if not segments:
        raise ValueError("nothing to prefill")
    inputs, positions, nxt = pack(segments, offset)
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in inputs.items()}
    if visible is not None:
        inputs["attention_mask"] = key_mask_4d(model, visible.to(device), inputs["input_ids"].shape[1])
    if "pixel_values_videos" in inputs:
        inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(model.dtype)
    if logits_to_keep is None:
        model.model(**inputs, past_key_values=cache, use_cache=True)
        return PrefillResult(logits=torch.empty(0), next_position=nxt, positions=positions)
    out = model(**inputs, past_key_values=cache, use_cache=True, logits_to_keep=logits_to_keep)
    return PrefillResult(logits=out.logits[0].float(), next_position=nxt, positions=positions)


@torch.no_grad()
def step(model: torch.nn.Module, cache: Cache, token: int, position: int,
         visible: torch.Tensor | None = None) -> torch.Tensor:
    """Feed one text token at `position` (all three axes); return its logits [vocab]."""
    device = next(model.parameters()).device
    ids = torch.tensor([[token]], device=device)
    pos = torch.full((3, 1, 1), position, dtype=torch.long, device=device)
    types = torch.zeros_like(ids, dtype=torch.int32)
    extra = {} if visible is None else {"attention_mask": key_mask_4d(model, visible.to(device), 1)}
    out = model(input_ids=ids, position_ids=pos, mm_token_type_ids=types, past_key_values=cache,
                use_cache=True, logits_to_keep=1, **extra)
    return out.logits[0, -1].float()
