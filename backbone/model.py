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
from transformers import (LogitsProcessorList, MinPLogitsWarper, RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                          TopKLogitsWarper, TopPLogitsWarper)
from transformers.cache_utils import Cache
from transformers.generation.streamers import BaseStreamer

from longwatch.backbone.cache import AnswerRows, KVCache
from longwatch.backbone.config import ModelConfig, Sampling, checkpoint_sampling
from longwatch.backbone.inputs import PromptLayout, Segment, key_mask_4d, pack, preprocess_patch, timestamp_text, \
    vision_tokens
from longwatch.backbone.loading import LoadedModel, load_model


@dataclass
class PrefillResult:
    logits: torch.Tensor
    """[n, vocab] float32 logits for the last `n` tokens (n = logits_to_keep, default 1)."""
    next_position: int
    """Position where the next segment starts (offset + sum of spans)."""
    positions: torch.Tensor
    """[3, L] absolute positions used for this call."""


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
def step(model: torch.nn.Module, cache: Cache, token: int | torch.Tensor, position: int,
         visible: torch.Tensor | None = None) -> torch.Tensor:
    """Feed one text token (an id, or a 0-d tensor left on the device) at `position` (all three axes); return
    its logits [vocab]."""
    device = next(model.parameters()).device
    ids = token.view(1, 1).to(device) if isinstance(token, torch.Tensor) else torch.tensor([[token]], device=device)
    pos = torch.full((3, 1, 1), position, dtype=torch.long, device=device)
    types = torch.zeros_like(ids, dtype=torch.int32)
    extra = {} if visible is None else {"attention_mask": key_mask_4d(model, visible.to(device), 1)}
    out = model(input_ids=ids, position_ids=pos, mm_token_type_ids=types, past_key_values=cache,
                use_cache=True, logits_to_keep=1, **extra)
    return out.logits[0, -1].float()


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


def processors(sampling: Sampling) -> LogitsProcessorList:
    """transformers' logits processors for `sampling`, in generate()'s order (penalty, then the warpers)."""
    out = LogitsProcessorList()
    if sampling.repetition_penalty != 1.0:
        out.append(RepetitionPenaltyLogitsProcessor(sampling.repetition_penalty))
    if sampling.temperature > 0:
        out += [TemperatureLogitsWarper(sampling.temperature)] + \
            ([TopKLogitsWarper(sampling.top_k)] if sampling.top_k > 0 else []) + \
            ([TopPLogitsWarper(sampling.top_p)] if sampling.top_p < 1.0 else []) + \
            ([MinPLogitsWarper(sampling.min_p)] if sampling.min_p > 0 else [])
    return out


def pick(logits: torch.Tensor, previous: torch.Tensor, procs: LogitsProcessorList,
         generator: torch.Generator | None) -> torch.Tensor:
    """The next token as a 0-d tensor on the logits' device (no host sync): argmax, or a draw when sampling."""
    scores = procs(previous[None], logits.float()[None])[0]
    if generator is None:
        return torch.argmax(scores)
    return torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator)[0]


class AnswerStreamer(BaseStreamer):
    """transformers' streamer interface over incremental detokenisation: `put` token ids, get only the new text
    in `callback` (multi-byte safe); `end` settles the whole text."""

    def __init__(self, tokenizer, callback: Callable[[str], None] | None) -> None:
        self.tokenizer, self.callback = tokenizer, callback
        self.ids: list[int] = []
        self.text = ""

    def put(self, value: int | list[int] | torch.Tensor) -> None:
        self.ids += value.flatten().tolist() if isinstance(value, torch.Tensor) else \
            [value] if isinstance(value, int) else list(value)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the next token
            return
        new, self.text = text[len(self.text):], text
        if new and self.callback:
            self.callback(new)

    def end(self) -> None:
        self.text = self.tokenizer.decode(self.ids, skip_special_tokens=True)


def decode(model: torch.nn.Module, cache: Cache, first_logits: torch.Tensor, position: int, tokenizer,
           stop_ids: list[int], sampling: Sampling, on_text: Callable[[str], None] | None = None,
           keep_logits: bool = False, should_stop: Callable[[], bool] | None = None,
           visible: torch.Tensor | None = None, turn: AbstractContextManager | None = None,
           sync_every: int | None = None, stepper: Callable[[torch.Tensor, int], torch.Tensor] | None = None
           ) -> DecodeResult:
    """Generate after a prefill whose last logits are `first_logits`; the next token sits at `position`.

    Appends generated tokens to `cache` (the caller truncates it afterwards if answers are transient).
    `visible` [cache length] hides cached slots (see key_mask_4d); new tokens are visible. `turn`, when
    given, is held for each step's forward only (the model lock: other streams encode between tokens).
    Tokens stay on the device (sampling and the next step's input need no host copy); they are copied to
    the host with the first token and then every `sync_every` (default 1 on CPU, where a copy is free,
    8 on CUDA) to stream their text and find an end-of-turn token, so on CUDA up to sync_every - 1 steps
    after it are computed and dropped. `stepper(token, position)`, when given, runs each step instead (an
    AnswerRows row: the cache, `visible` and `turn` are then the row's).
    """
    turn = turn if turn is not None else contextlib.nullcontext()
    t0, device = time.perf_counter(), first_logits.device
    sync = sync_every or (8 if device.type == "cuda" else 1)
    gen = torch.Generator(device).manual_seed(sampling.seed) if sampling.temperature > 0 else None
    procs, streamer, limit = processors(sampling), AnswerStreamer(tokenizer, on_text), sampling.max_new_tokens
    ids = torch.empty(limit, dtype=torch.long, device=device)
    logits, first_s, n = first_logits, 0.0, 0
    kept: list[torch.Tensor] = []

    def flush(shown: int, n: int) -> tuple[int, bool]:
        """Copy tokens [shown, n) to the host (the one sync); stream them up to an end-of-turn token."""
        new = ids[shown:n].tolist()
        cut = next((j for j, t in enumerate(new) if t in stop_ids), None)
        if new[: len(new) if cut is None else cut]:
            streamer.put(new[: len(new) if cut is None else cut])
        return (n, False) if cut is None else (shown + cut, True)

    shown, stopped = 0, False
    while n < limit:
        if keep_logits:
            kept.append(logits.detach().float().cpu())
        token = pick(logits, ids[:n], procs, gen)
        ids[n] = token
        n += 1
        if n == 1 or n - shown >= sync:
            shown, stopped = flush(shown, n)
            n = shown if stopped else n
            first_s = first_s or time.perf_counter() - t0  # after the first copy: the token exists then
        if stopped or (should_stop is not None and should_stop()) or n == limit:
            break
        if stepper is not None:
            logits = stepper(token, position)
        else:
            if visible is not None:
                visible = torch.cat([visible, visible.new_ones(cache.get_seq_length() - visible.numel())])
            with turn:
                logits = step(model, cache, token, position, visible)
        position += 1
    if not stopped and shown < n:
        shown, stopped = flush(shown, n)
        n = shown
    streamer.end()
    return DecodeResult(token_ids=streamer.ids[:n], text=streamer.text, stopped=stopped, first_token_s=first_s,
                        decode_s=time.perf_counter() - t0, logits=kept[:n + stopped])


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
        self.sampling = checkpoint_sampling(self.cfg, getattr(self.model, "generation_config", None))
        """How answers decode unless a caller says otherwise: the config, its unset keys from the checkpoint."""
        self.lock = FairRLock()
        """Serialises model calls across streams (hooks and the model's buffers are shared state), one
        forward at a time and in arrival order: answers hold it per decode step, not per answer."""
        self.rows = AnswerRows(self.model, self.dims, self.device, self.lock)
        """Answers decoding at the same time share one batched forward per token (see AnswerRows)."""

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


    @torch.no_grad()
    def embed_text(self, texts: list[str]) -> torch.Tensor:
        """Texts -> [n, hidden] float32 unit rows: the language model's last hidden states (after its final
        norm), mean-pooled over each text's tokens, read alone (no video, no prompt). The text memory's default
        embedder (memory/captions.py)."""
        rows = []
        with self.lock:
            for text in texts:
                ids = self.layout.encode_text(text)
                if not ids:
                    raise ValueError("cannot embed an empty text")
                n = len(ids)
                pos = torch.arange(n, device=self.device).view(1, 1, n).expand(3, 1, n)
                out = self.model.model.language_model(input_ids=torch.tensor([ids], device=self.device),
                                                      position_ids=pos, use_cache=False)
                rows.append(torch.nn.functional.normalize(out.last_hidden_state[0].float().mean(0), dim=0))
        return torch.stack(rows).cpu()

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
