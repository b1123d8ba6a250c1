"""What a question gets back from memory: the answer, the evidence it saw, a watch's yes/no score."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

YES_NO = "\nAnswer only Yes or No."
"""Appended to a yes/no question (a watch's condition, every training yes/no query): trained with it."""


@dataclass(frozen=True)
class Evidence:
    block_id: int
    t_start: float
    t_end: float
    reason: str
    """'sink', 'memory' (compressed, on device), 'window', 'retrieved', 'time' or 'note' (streamchat's text memory:
    its block_id is -1 - the note's id, `text` the note)."""
    score: float | None = None
    text: str | None = None


@dataclass(frozen=True)
class YesNo:
    """A yes/no condition scored on the newest patches (Answerer.yes_no)."""

    p_yes: float
    """softmax over the logits of "Yes" and "No" as the answer's first token."""
    logit_yes: float
    logit_no: float
    t: float
    """Stream time it was scored at: the end of the newest patch in memory."""
    evidence: Evidence
    """The newest patch: the frame an alert would show."""


@dataclass
class Answer:
    text: str
    token_ids: list[int]
    ttft_s: float
    """Seconds from the question to its first answer token (retrieval + prefill + first sample)."""
    prefill_s: float
    decode_s: float
    retrieval_s: float
    evidence: list[Evidence]
    memory: dict
    stopped: bool
    logits: list[torch.Tensor] = field(default_factory=list)
    question_tokens: int = 0
    context_tokens: int = 0
    kept: dict[int, torch.Tensor | None] = field(default_factory=dict)
    """Blocks in the answer's context: id -> [layers, k] original vision indices kept (None = whole block)."""
    copied_bytes: int = 0
    """Bytes of the private cache copy the answer was decoded on (0: decoded in place; see Answerer.ask)."""
    choices: list[dict] | None = None
    """An answer picked from given choices: per choice {"choice", "logprob", "prob"} (see Answerer.ask)."""
