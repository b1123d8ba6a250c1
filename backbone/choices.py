"""Answers picked from given choices: each choice scored whole by the model, and the checks on a list of them."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

from longwatch.backbone.cache import KVCache
from longwatch.backbone.config import Sampling
from longwatch.backbone.inputs import key_mask_4d


@dataclass
class ChoiceResult:
    index: int
    """The choice picked: the most probable one (greedy), or one drawn from `probs` when sampling."""
    logprobs: list[float]
    """log P(the model answers exactly this choice, then ends its turn), one per choice."""
    probs: list[float]
    """Those probabilities renormalised over the choices."""
    seconds: float


@torch.no_grad()
def score_choices(model: torch.nn.Module, cache: KVCache, first_logits: torch.Tensor, position: int,
                  choices: list[list[int]], stop_id: int, sampling: Sampling,
                  visible: torch.Tensor | None = None, turn: AbstractContextManager | None = None) -> ChoiceResult:
    """Pick one of `choices` (token ids each) after a prefill whose last logits are `first_logits`.

    Each choice is scored by the model's own probability of answering it whole: its tokens teacher-forced in
    one forward at `position`, their log-probabilities summed with that of the end-of-turn token `stop_id` after
    them (so a choice that is a prefix of another is not favoured, and no length normalisation is needed). The
    cache is truncated back after each choice. Greedy sampling takes the most probable; a temperature draws
    from the renormalised distribution (`sampling.seed`). Written here rather than with a logits processor:
    constrained decoding token by token (vLLM's guided_choice) commits to a choice's first token greedily,
    while whole-sequence scoring compares the choices themselves; both are one short forward per choice here.
    """
    if not choices or any(not c for c in choices):
        raise ValueError("every choice needs at least one token")
    turn = turn if turn is not None else contextlib.nullcontext()
    t0, start = time.perf_counter(), cache.length
    first = torch.log_softmax(first_logits.float(), -1)
    device = next(model.parameters()).device
    scores: list[float] = []
    for ids in choices:
        n = len(ids)
        seq = torch.tensor([ids], device=device)
        pos = (torch.arange(n, device=device) + position).view(1, 1, n).expand(3, 1, n)
        extra = {} if visible is None else {"attention_mask": key_mask_4d(model, visible.to(device), n)}
        try:
            with turn:
                out = model(input_ids=seq, position_ids=pos, mm_token_type_ids=torch.zeros_like(seq, dtype=torch.int32),
                            past_key_values=cache, use_cache=True, logits_to_keep=n, **extra)
        finally:
            cache.truncate(start)
        lp = torch.log_softmax(out.logits[0].float(), -1)
        nxt = torch.tensor(ids[1:] + [stop_id], device=lp.device)
        scores.append(float(first[ids[0]]) + float(lp.gather(1, nxt[:, None]).sum()))
    s = torch.tensor(scores, dtype=torch.float64)
    if sampling.temperature > 0:
        probs = torch.softmax(s / sampling.temperature, 0)
        gen = torch.Generator().manual_seed(sampling.seed)
        index = int(torch.multinomial(probs.float(), 1, generator=gen)[0])
    else:
        index = int(torch.argmax(s))
    return ChoiceResult(index, scores, torch.softmax(s, 0).tolist(), time.perf_counter() - t0)


MAX_CHOICES = 64
"""Choices one question may list: each costs a short forward over the question's cache."""


def check_choices(choices: Sequence[str], field: str = "choices") -> list[str]:
    """The choices stripped, or ValueError naming what is wrong: none given, more than MAX_CHOICES, an empty or
    a repeated choice (what can be checked before a tokenizer is loaded). Messages start with `field`, the name
    the caller's user knows (--choice, structured_outputs.choice)."""
    if isinstance(choices, str) or not choices:
        raise ValueError(f"{field}: give a list of at least one answer to pick from")
    if len(choices) > MAX_CHOICES:
        raise ValueError(f"{field}: {len(choices)} given, at most {MAX_CHOICES}")
    out: list[str] = []
    for c in choices:
        text = str(c).strip()
        if not text:
            raise ValueError(f"{field}: an empty choice")
        if text in out:
            raise ValueError(f"{field}: {text!r} is listed twice")
        out.append(text)
    return out


def choice_ids(layout, choices: Sequence[str], max_tokens: int, field: str = "choices") -> list[list[int]]:
    """Token ids of each choice (stripped), or ValueError naming the bad one (check_choices, or one longer than
    `max_tokens`)."""
    out = []
    for text in check_choices(choices, field):
        ids = layout.encode_text(text)
        if len(ids) > max_tokens:
            raise ValueError(f"{field}: {text[:40]!r} is {len(ids)} tokens; at most {max_tokens}")
        out.append(ids)
    return out


def choice_table(choices: Sequence[str], res: ChoiceResult) -> list[dict]:
    """Answer.choices: each choice with its log-probability and its share of the choices' probability."""
    return [{"choice": c.strip(), "logprob": round(lp, 4), "prob": round(p, 4)}
            for c, lp, p in zip(choices, res.logprobs, res.probs)]
