"""Several streams, one model: one batched forward encodes a patch of every stream at once.

Each stream keeps its own memory. For a batched step, every stream's live cache (sinks, memory,
window) is copied into one row of a transient batch cache, left-aligned; the new patches go after
the longest row. A 4D mask lets each row's patch see its own context and, causally, itself, and
nothing of the padding; positions are each stream's own. The new K/V are then appended to each
stream's cache and the stream records the block as after a single-stream forward, so the result
equals ingesting the patches one stream at a time (tested to 1e-4). Streams are used through their
public parts only: `encoder.prepare` / `encoder.commit` around the forward, `store.cache` read.
"""

from __future__ import annotations

import torch

from longwatch.backbone.cache import KVCache
from longwatch.backbone.inputs import Segment
from longwatch.backbone.model import QKCapture
from longwatch.ingest.patches import TemporalPatch
from longwatch.memory.block import Block
from longwatch.memory.schema import ConfigError, format_bytes
from longwatch.memory.stream import MemoryStream

_PAD = 151643  # <|endoftext|>; padded positions are masked out and their outputs discarded


def _batch_inputs(streams: list[MemoryStream], segs: list[Segment]) -> tuple[dict, list[int], int, int]:
    bb = streams[0].bb
    lens = [s.store.cache.length for s in streams]
    lmax, nmax = max(lens), max(len(seg) for seg in segs)
    b = len(streams)
    ids = torch.full((b, nmax), _PAD, dtype=torch.long)
    types = torch.zeros((b, nmax), dtype=torch.int32)
    pos = torch.zeros((3, b, nmax), dtype=torch.long)
    mask = torch.zeros((b, 1, nmax, lmax + nmax), dtype=torch.bool)
    causal = torch.tril(torch.ones(nmax, nmax, dtype=torch.bool))
    for i, (s, seg) in enumerate(zip(streams, segs)):
        n = len(seg)
        ids[i, :n], types[i, :n] = seg.input_ids, seg.token_types
        p = seg.positions + s.store.next_position
        pos[:, i, :n] = p
        pos[:, i, n:] = p[:, -1:]  # padding: any position, its outputs are dropped
        mask[i, 0, :, : lens[i]] = True
        mask[i, 0, :, lmax:] = causal
    if bb.loaded.attn == "eager":
        mask = torch.where(mask, 0.0, torch.finfo(bb.dtype).min).to(bb.dtype)
    inputs = {"input_ids": ids, "mm_token_type_ids": types, "position_ids": pos, "attention_mask": mask,
              "pixel_values_videos": torch.cat([seg.pixel_values for seg in segs]).to(bb.dtype),
              "video_grid_thw": torch.tensor([seg.grid_thw for seg in segs], dtype=torch.long)}
    return {k: v.to(bb.device) for k, v in inputs.items()}, lens, lmax, nmax


def _batch_cache(streams: list[MemoryStream], lmax: int, nmax: int) -> KVCache:
    """A transient cache whose row i holds stream i's live cache, left-aligned and zero-padded to the
    longest (masked keys still meet their values in the weighted sum: 0 * NaN garbage = NaN)."""
    bb = streams[0].bb
    d = bb.dims
    batch = KVCache(d.num_layers, d.kv_heads, d.head_dim, bb.dtype, bb.device, batch=len(streams), initial=lmax + nmax)
    for layer_idx, layer in enumerate(batch.layers):
        k = torch.zeros(len(streams), d.kv_heads, lmax, d.head_dim, dtype=bb.dtype, device=bb.device)
        v = torch.zeros_like(k)
        for i, s in enumerate(streams):
            src = s.store.cache.layers[layer_idx]  # [1, kv_heads, length, head_dim] live views
            k[i, :, : src.keys.shape[2]] = src.keys[0]
            v[i, :, : src.values.shape[2]] = src.values[0]
        layer.update(k, v)
    return batch


def batch_bytes(streams: list[MemoryStream], segs: list[Segment]) -> int:
    """Bytes of the transient batch cache for these streams and segments (rows padded to the longest)."""
    lmax = max(s.store.cache.length for s in streams)
    nmax = max(len(seg) for seg in segs)
    return len(streams) * (lmax + nmax) * streams[0].bb.dims.bytes_per_token


def split_for_budget(streams: list[MemoryStream], segs: list[Segment], budget: int) -> list[tuple[list[int], int]]:
    """Stream indices grouped into consecutive batches whose transient cache fits `budget` bytes, each with
    its size in bytes."""
    size = lambda g: batch_bytes([streams[j] for j in g], [segs[j] for j in g])  # noqa: E731
    groups: list[tuple[list[int], int]] = []
    for i in range(len(streams)):
        trial = groups[-1][0] + [i] if groups else [i]
        need = size(trial)
        if groups and need <= budget:
            groups[-1] = (trial, need)
            continue
        alone = size([i])
        if alone > budget:
            raise ConfigError(f"batch_budget: {format_bytes(budget)} cannot hold one stream's batch copy "
                              f"({format_bytes(alone)}: its live cache plus the new patch)")
        groups.append(([i], alone))
    return groups


@torch.no_grad()
def ingest_batch(streams: list[MemoryStream], patches: list[TemporalPatch], budget: int | None = None,
                 report: dict | None = None) -> list[Block]:
    """Ingest patches[i] into streams[i] (MemoryStreams sharing one backbone), batched; returns blocks.

    The transient batch cache copies every stream's live cache, outside each stream's own budget, so it
    has its own: `budget` bytes (default: the first stream's device budget), and streams are split into
    as many forwards as it takes to stay inside it. `report`, when given, receives the step's forwards,
    its largest batch cache in bytes and the budget.
    """
    if len(streams) != len(patches) or not streams:
        raise ValueError("one patch per stream")
    bb = streams[0].bb
    if any(s.bb is not bb for s in streams):
        raise ValueError("batched streams must share one backbone")
    if bb.loaded.attn == "flash_attention_2":
        raise ValueError("multi-stream batching needs a 4D mask: use attn sdpa or eager")
    budget = streams[0].cfg.device_budget if budget is None else budget
    with bb.lock:
        segs = [s.encoder.prepare(p) for s, p in zip(streams, patches)]
        out: dict[int, Block] = {}
        groups = split_for_budget(streams, segs, budget)
        for g, _ in groups:
            out.update(zip(g, _forward([streams[i] for i in g], [segs[i] for i in g], [patches[i] for i in g])))
        if report is not None:
            report.update(forwards=len(groups), peak_bytes=max(n for _, n in groups), budget=budget)
        return [out[i] for i in range(len(streams))]


def _forward(streams: list[MemoryStream], segs: list[Segment], patches: list[TemporalPatch]) -> list[Block]:
    """One batched forward of prepared segments; commits each stream's block."""
    bb = streams[0].bb
    inputs, lens, lmax, nmax = _batch_inputs(streams, segs)
    batch = _batch_cache(streams, lmax, nmax)
    wants = any(s.encoder.wants_prerope for s in streams)
    with QKCapture(bb.model, keys=wants, batch=True) as cap:
        bb.model.model(**inputs, past_key_values=batch, use_cache=True)  # cache only: no LM head
    blocks = []
    for i, (s, seg, patch) in enumerate(zip(streams, segs, patches)):
        n = len(seg)
        kv = torch.stack([torch.stack([layer.keys[i, :, lmax: lmax + n], layer.values[i, :, lmax: lmax + n]])
                          for layer in batch.layers])
        prerope = [k[i, :n] for k in cap.keys] if s.encoder.wants_prerope else None
        blocks.append(s.encoder.commit(patch, seg, prerope, kv))
    return blocks
