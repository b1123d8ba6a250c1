"""Backbone: a loaded Qwen3-VL with its prompt layout and cache factory; streaming prefill, decode, q/k capture.

Prefill feeds segments (prefix, temporal patches, question) to Qwen3-VL with explicit positions: every
call passes 3-row M-RoPE positions (segment positions + the running offset) and mm_token_type_ids, so the
model never falls back to its stateful `rope_deltas`; pixel values go in with the call, so DeepStack
features are injected at this call's visual tokens. Chunks must hold whole temporal patches (the ViT
attends within one temporal patch, so per-chunk encoding is exact). Decoding is our own loop: greedy or
temperature/top-p sampling, explicit positions, tokens streamed to a callback. `QKCapture` records the
pre-RoPE queries and keys of each decoder layer with forward hooks (no forward is replaced).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from transformers.cache_utils import Cache

from longwatch.backbone.cache import KVCache
from longwatch.backbone.config import ModelConfig
from longwatch.backbone.inputs import PromptLayout, Segment, preprocess_patch, timestamp_text, vision_tokens
from longwatch.backbone.loading import LoadedModel, load_model


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
        raise ValueError(f"this question hides cached slots (until=: an upload encoded ahead of its player), which "
                         f"needs model.attn sdpa or eager; the model runs {impl}")
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


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0
    """0 = greedy."""
    top_p: float = 1.0
    max_new_tokens: int = 64
    seed: int = 0


@dataclass
class DecodeResult:
    token_ids: list[int]
    text: str
    stopped: bool
    """True when an end-of-turn token ended the answer (it is not included in token_ids/text)."""
    first_token_s: float
    """Seconds from the call to the first sampled token (the question prefill is the caller's)."""
    decode_s: float
    logits: list[torch.Tensor] = field(default_factory=list)
    """Per-step logits [vocab] when asked for (fidelity measures)."""


def sample(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None = None) -> int:
    """Pick the next token from logits [vocab]."""
    if sampling.temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_p, idx = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < sampling.top_p
        keep[0] = True
        probs = torch.zeros_like(probs).scatter_(0, idx[keep], sorted_p[keep])
        probs /= probs.sum()
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


class TextStreamer:
    """Incremental detokenisation: emits only the new text after each token (multi-byte safe)."""

    def __init__(self, tokenizer, callback: Callable[[str], None] | None) -> None:
        self.tokenizer, self.callback = tokenizer, callback
        self.ids: list[int] = []
        self.text = ""

    def push(self, token_id: int) -> None:
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the next token
            return
        new, self.text = text[len(self.text):], text
        if new and self.callback:
            self.callback(new)

    def finish(self) -> str:
        self.text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        return self.text


def decode(model: torch.nn.Module, cache: Cache, first_logits: torch.Tensor, position: int, tokenizer,
           stop_ids: list[int], sampling: Sampling, on_text: Callable[[str], None] | None = None,
           keep_logits: bool = False, should_stop: Callable[[], bool] | None = None,
           visible: torch.Tensor | None = None, turn: AbstractContextManager | None = None) -> DecodeResult:
    """Generate after a prefill whose last logits are `first_logits`; the next token sits at `position`.

    Appends generated tokens to `cache` (the caller truncates it afterwards if answers are transient).
    `visible` [cache length] hides cached slots (see key_mask_4d); new tokens are visible. `turn`, when
    given, is held for each step's forward only (the model lock: other streams encode between tokens).
    """
    turn = turn if turn is not None else contextlib.nullcontext()
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(sampling.seed) if sampling.temperature > 0 else None
    streamer = TextStreamer(tokenizer, on_text)
    logits, stopped, first_s = first_logits, False, 0.0
    kept: list[torch.Tensor] = []
    for i in range(sampling.max_new_tokens):
        if keep_logits:
            kept.append(logits.detach().float().cpu())
        token = sample(logits, sampling, gen)
        if i == 0:
            first_s = time.perf_counter() - t0
        if token in stop_ids:
            stopped = True
            break
        streamer.push(token)
        if should_stop is not None and should_stop():
            break
        if i + 1 < sampling.max_new_tokens:
            if visible is not None:
                visible = torch.cat([visible, visible.new_ones(cache.get_seq_length() - visible.numel())])
            with turn:
                logits = step(model, cache, token, position, visible)
            position += 1
    return DecodeResult(token_ids=streamer.ids, text=streamer.finish(), stopped=stopped, first_token_s=first_s,
                        decode_s=time.perf_counter() - t0, logits=kept)


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


# The model lock, written by hand because neither the standard library nor a maintained package has it:
# threading.RLock gives no order, and a thread that releases and re-acquires in a loop (decoding holds the
# model for one token at a time) wins it back almost every time, starving the streams waiting to encode.
# Here a release with waiters goes to the oldest one, so a live stream waits at most one decode step.
class FairRLock:
    """A re-entrant lock with first-come, first-served hand-over (same interface as threading.RLock)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._count = 0
        self._queue: deque[object] = deque()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._count += 1
                return True
            if self._owner is None and not self._queue:
                self._owner, self._count = me, 1
                return True
            if not blocking:
                return False
            ticket = object()
            self._queue.append(ticket)
            deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
            try:
                while self._owner is not None or self._queue[0] is not ticket:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._cond.wait(left)
                self._owner, self._count = me, 1
                return True
            finally:
                self._queue.remove(ticket)
                if self._owner != me:  # gave up: the next waiter may now be first
                    self._cond.notify_all()

    def release(self) -> None:
        with self._cond:
            if self._owner != threading.get_ident():
                raise RuntimeError("cannot release a model lock held by another thread")
            self._count -= 1
            if self._count == 0:
                self._owner = None
                self._cond.notify_all()

    def waiting(self) -> int:
        """Threads queued for the lock now."""
        with self._cond:
            return len(self._queue)

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


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
        self.lock = FairRLock()
        """Serialises model calls across streams (hooks and the model's buffers are shared state), one
        forward at a time and in arrival order: answers hold it per decode step, not per answer."""

    @classmethod
    def load(cls, cfg: ModelConfig, system_prompt: str | None = None) -> "Backbone":
        return cls(load_model(cfg), cfg, system_prompt)

    @property
    def name(self) -> str:
        return self.loaded.name

    @property
    def max_positions(self) -> int:
        """Positions the language model was trained on (text_config.max_position_embeddings: 262,144 for Qwen3-VL)."""
        return int(self.model.config.text_config.max_position_embeddings)

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
        return len(self.layout.encode_text(timestamp_text(t))) + 2 + vision_tokens(size)
