"""Own decode loop: greedy or temperature/top-p sampling, explicit positions, tokens streamed to a callback."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers.cache_utils import Cache

from longwatch.backbone.prefill import step


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
           visible: torch.Tensor | None = None) -> DecodeResult:
    """Generate after a prefill whose last logits are `first_logits`; the next token sits at `position`.

    Appends generated tokens to `cache` (the caller truncates it afterwards if answers are transient).
    `visible` [cache length] hides cached slots (see backbone.prefill.key_mask_4d); new tokens are visible.
    """
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
            logits = step(model, cache, token, position, visible)
            position += 1
    return DecodeResult(token_ids=streamer.ids, text=streamer.finish(), stopped=stopped, first_token_s=first_s,
                        decode_s=time.perf_counter() - t0, logits=kept)
