"""Answering a question from a BlockStore: retrieval, the question's cache, decoding, evidence."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from longwatch.backbone.decode import DecodeResult, Sampling, decode
from longwatch.backbone.hooks import QKCapture
from longwatch.backbone.model import Backbone
from longwatch.backbone.prefill import prefill
from longwatch.backbone.prompt import Segment
from longwatch.backbone.rope import apply_shift, shift_cos_sin
from longwatch.memory.block import DISK, HOST, MEMORY, Block
from longwatch.memory.config import MemoryConfig
from longwatch.memory.policies import Policy, Selection
from longwatch.memory.retrieval import question_query, spread
from longwatch.memory.store import BlockStore
from longwatch.memory.timeparse import parse_time_ranges


@dataclass(frozen=True)
class Evidence:
    block_id: int
    t_start: float
    t_end: float
    reason: str
    """'sink', 'memory' (compressed, on device), 'window', 'retrieved' or 'time'."""
    score: float | None = None


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


class Answerer:
    """Answers questions from one stream's BlockStore and leaves it as it was.

    The cache for a question is [prefix | sinks | window | compressed memory or retrieved blocks, in
    time order | question | answer]; keys are visible whatever their slot order, so blocks brought in
    go after the window, and all of it is truncated away afterwards (store.transient). Question
    positions continue after the newest block. Retrieval (rekv) picks every block covering a time the
    question names, then the policy's top-k by the question's own queries; `until` hides blocks that
    start at or after it from attention, retrieval and evidence.
    """

    def __init__(self, backbone: Backbone, store: BlockStore, cfg: MemoryConfig, policy: Policy) -> None:
        self.bb, self.store, self.cfg, self.policy = backbone, store, cfg, policy

    def ask(self, question: str, on_text: Callable[[str], None] | None = None, now: float | None = None,
            keep_logits: bool = False, sampling: Sampling | None = None,
            should_stop: Callable[[], bool] | None = None, until: float | None = None) -> Answer:
        """Answer `question` from memory; the stream is unchanged afterwards (question and answer are transient).

        `now` (seconds) anchors "5 minutes ago"; default: the newest ingested time. `until` hides
        every block that starts at or after it (an upload encoded ahead of its play position: the
        answer sees only what has played). The model lock is held for the whole answer, so other
        streams sharing the backbone wait until it is done.
        """
        with self.bb.lock:
            return self._ask(question, on_text, now, keep_logits, sampling, should_stop, until)

    def question_query(self, question_seg: Segment, visible: torch.Tensor | None = None) -> torch.Tensor:
        """The question's retrieval query [layers, kv_heads * head_dim] from its own queries over the cache."""
        store = self.store
        with store.transient() as cache, QKCapture(self.bb.model, queries=True) as cap:
            prefill(self.bb.model, cache, [question_seg], store.next_position, None, visible)
        queries = [q.float() for q in cap.queries]
        if self.cfg.retrieval_keys == "cached":  # rotate into the absolute frame of the summaries
            pos = torch.arange(len(question_seg)) + store.base + store.next_position
            rotated = []
            for q in queries:
                rows = [apply_shift(q[i], *shift_cos_sin(self.bb.rotary_emb, int(p), torch.float32, q.device))
                        for i, p in enumerate(pos.tolist())]
                rotated.append(torch.stack(rows))
            queries = rotated
        return question_query(queries, self.bb.dims.kv_heads)

    def select(self, question: str, question_seg: Segment, now: float, until: float | None = None) -> list[Selection]:
        """The compressed memory whole (infinipot, streammem), or retrieved offloaded blocks (rekv)."""
        seen = [b for b in self.store.blocks.values() if until is None or b.t_start < until]
        memory = [Selection(b.id, "memory") for b in seen if b.tier == MEMORY]
        stored = [b for b in seen if b.tier in (HOST, DISK)]
        if not self.policy.retrieves or not stored:
            return memory
        forced: list[int] = []
        for t0, t1 in parse_time_ranges(question, now):
            forced += [b.id for b in sorted(stored, key=lambda b: b.t_start) if b.covers(t0, t1) and b.id not in forced]
        forced = spread(forced, self.cfg.time_blocks)
        visible = self.store.visible_mask(self._hidden(until))
        ids, scores = self.store.index.scores(self.question_query(question_seg, visible))
        allowed = {b.id for b in stored}
        cols = [i for i, b in enumerate(ids) if b in allowed]
        return self.policy.select([ids[i] for i in cols], scores[:, cols], self.cfg.retrieve_blocks, forced)

    def _hidden(self, until: float | None) -> list[Block]:
        if until is None:
            return []
        return [b for b in self.store.device_blocks if b.kind == "patch" and b.t_start >= until]

    def _ask(self, question, on_text, now, keep_logits, sampling, should_stop, until=None) -> Answer:
        store = self.store
        if not question or not question.strip():
            raise ValueError("empty question")
        if not store.device_blocks:
            raise ValueError("no video has been ingested yet")
        t0 = time.perf_counter()
        t_last = store.state.t_last
        now = (t_last if until is None else min(t_last, until)) if now is None else now
        hidden = self._hidden(until)
        qseg = self.bb.layout.question(question.strip())
        if len(qseg) > self.cfg.answer_tokens // 2 and store.bounded:
            raise ValueError(f"question is {len(qseg)} tokens; at most {self.cfg.answer_tokens // 2} fit the answer reserve")
        with store.transient() as cache:
            selections = self.select(question, qseg, now, until)
            chosen = sorted(selections, key=lambda s: store.blocks[s.block_id].t_start)
            blocks = [store.blocks[s.block_id] for s in chosen]
            for block, target in zip(blocks, placement(blocks, store.window, store.next_position, store.base, self.cfg)):
                store.bring_in(block, target)
            t_ret = time.perf_counter() - t0
            visible = store.visible_mask(hidden)
            r = prefill(self.bb.model, cache, [qseg], store.next_position, visible=visible)
            t_pre = time.perf_counter() - t0 - t_ret
            context = cache.length - len(qseg) - sum(b.n_tokens for b in hidden)
            samp = sampling or self.bb.sampling
            if store.bounded:
                samp = Sampling(samp.temperature, samp.top_p, min(samp.max_new_tokens, self.cfg.answer_tokens - len(qseg)), samp.seed)
            out: DecodeResult = decode(self.bb.model, cache, r.logits[-1], r.next_position, self.bb.tokenizer,
                                       self.bb.layout.stop_ids, samp, on_text, keep_logits, should_stop,
                                       None if visible is None else torch.cat([visible, visible.new_ones(len(qseg))]))
        store.advance_clock()
        gone = {b.id for b in hidden}
        evidence = [e for e in evidence_of(store.device_blocks, selections, store.blocks) if e.block_id not in gone]
        kept = {b.id: b.kept for b in store.device_blocks if b.kind == "patch" and b.id not in gone}
        kept.update({s.block_id: store.blocks[s.block_id].kept for s in selections})
        return Answer(text=out.text, token_ids=out.token_ids, ttft_s=t_ret + t_pre + out.first_token_s,
                      prefill_s=t_pre, decode_s=out.decode_s, retrieval_s=t_ret, evidence=evidence,
                      memory=store.refresh_stats(), stopped=out.stopped, logits=out.logits, question_tokens=len(qseg),
                      context_tokens=context, kept=kept)


def placement(blocks: list[Block], window: list[Block], next_position: int, base: int,
              cfg: MemoryConfig) -> list[int | None]:
    """Model positions for blocks brought in, in time order: their own (None; positions keep), or
    packed just before the window (contiguous, and for keep-mode blocks further back than rebase_limit)."""
    if not blocks:
        return []
    anchor = (window[0].pos_start - base) if window else next_position
    far = next_position - cfg.rebase_limit
    if cfg.positions == "keep" and all(b.pos_start - base >= far for b in blocks):
        return [None] * len(blocks)
    out, pos = [], anchor - sum(b.span for b in blocks)
    for b in blocks:
        out.append(pos)
        pos += b.span
    return out


def evidence_of(device_blocks: tuple[Block, ...], selections: list[Selection], blocks) -> list[Evidence]:
    """What an answer saw, in time order: sinks and window on the device, then the selected blocks."""
    ev = [Evidence(b.id, b.t_start, b.t_end, "sink" if b.is_sink else "window") for b in device_blocks
          if b.kind == "patch"]
    for s in selections:
        b = blocks[s.block_id]
        ev.append(Evidence(b.id, b.t_start, b.t_end, s.reason, s.score))
    return sorted(ev, key=lambda e: e.t_start)
