"""Answering from memory: retrieval, assembling the question's cache, decoding, evidence (MemoryStream mixin).

The cache for a question is [prefix | sinks | window | compressed memory or retrieved blocks, in time
order | question | answer]; keys are visible regardless of their slot order, so retrieved blocks go
after the window and are truncated away afterwards. Question positions continue after the newest block.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from longwatch.backbone.decode import DecodeResult, Sampling, decode
from longwatch.backbone.hooks import QKCapture
from longwatch.backbone.prefill import prefill
from longwatch.backbone.rope import apply_shift, shift_cos_sin
from longwatch.memory.block import DISK, HOST, MEMORY, Block
from longwatch.memory.policies import Selection
from longwatch.memory.retrieval import question_query, spread
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


class Answering:
    def _question_query(self, question_seg, visible: torch.Tensor | None = None) -> torch.Tensor:
        length = self.cache.length
        with QKCapture(self.bb.model, queries=True) as cap:
            prefill(self.bb.model, self.cache, [question_seg], self.next_position, None, visible)
        self.cache.truncate(length)
        queries = [q.float() for q in cap.queries]
        if self.cfg.retrieval_keys == "cached":  # rotate into the absolute frame of the summaries
            pos = torch.arange(len(question_seg)) + self.base + self.next_position
            rotated = []
            for q in queries:
                rows = [apply_shift(q[i], *shift_cos_sin(self.bb.rotary_emb, int(p), torch.float32, q.device))
                        for i, p in enumerate(pos.tolist())]
                rotated.append(torch.stack(rows))
            queries = rotated
        return question_query(queries, self.bb.dims.kv_heads)

    def _select(self, question: str, question_seg, now: float, until: float | None = None) -> list[Selection]:
        """The compressed memory whole (infinipot, streammem), or retrieved offloaded blocks (rekv)."""
        seen = [b for b in self.blocks.values() if until is None or b.t_start < until]
        memory = [Selection(b.id, "memory") for b in seen if b.tier == MEMORY]
        stored = [b for b in seen if b.tier in (HOST, DISK)]
        if not self.policy.retrieves or not stored:
            return memory
        forced: list[int] = []
        for t0, t1 in parse_time_ranges(question, now):
            forced += [b.id for b in sorted(stored, key=lambda b: b.t_start) if b.covers(t0, t1) and b.id not in forced]
        forced = spread(forced, self.cfg.time_blocks)
        ids, scores = self.index.scores(self._question_query(question_seg, self._visible_mask(self._hidden(until))))
        allowed = {b.id for b in stored}
        cols = [i for i, b in enumerate(ids) if b in allowed]
        return self.policy.select([ids[i] for i in cols], scores[:, cols], self.cfg.retrieve_blocks, forced)

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

    def _hidden(self, until: float | None) -> list[Block]:
        if until is None:
            return []
        return [b for b in self.region.blocks if b.kind == "patch" and b.t_start >= until]

    def _visible_mask(self, hidden: list[Block]) -> torch.Tensor | None:
        if not hidden:
            return None
        visible = torch.ones(self.cache.length, dtype=torch.bool)
        for b in hidden:
            off = self.region.offset(b)
            visible[off: off + b.n_tokens] = False
        return visible

    def _ask(self, question, on_text, now, keep_logits, sampling, should_stop, until=None) -> Answer:
        if not question or not question.strip():
            raise ValueError("empty question")
        if not self.region.blocks:
            raise ValueError("no video has been ingested yet")
        t0 = time.perf_counter()
        now = (self.t_last if until is None else min(self.t_last, until)) if now is None else now
        hidden = self._hidden(until)
        qseg = self.bb.layout.question(question.strip())
        if len(qseg) > self.cfg.answer_tokens // 2 and self._bounded:
            raise ValueError(f"question is {len(qseg)} tokens; at most {self.cfg.answer_tokens // 2} fit the answer reserve")
        length = self.cache.length
        try:
            selections = self._select(question, qseg, now, until)
            chosen = sorted(selections, key=lambda s: self.blocks[s.block_id].t_start)
            targets = self._targets([self.blocks[s.block_id] for s in chosen])
            for sel, target in zip(chosen, targets):
                block = self.blocks[sel.block_id]
                self.cache.append(self._placed(block, self._load_stored(block), target).to(self.cache.device))
                block.last_used = self.tick
            t_ret = time.perf_counter() - t0
            visible = self._visible_mask(hidden)
            r = prefill(self.bb.model, self.cache, [qseg], self.next_position, visible=visible)
            t_pre = time.perf_counter() - t0 - t_ret
            context = self.cache.length - len(qseg) - sum(b.n_tokens for b in hidden)
            self._track_device()
            samp = sampling or self.bb.sampling
            if self._bounded:
                samp = Sampling(samp.temperature, samp.top_p, min(samp.max_new_tokens, self.cfg.answer_tokens - len(qseg)), samp.seed)
            out: DecodeResult = decode(self.bb.model, self.cache, r.logits[-1], r.next_position, self.bb.tokenizer,
                                       self.bb.layout.stop_ids, samp, on_text, keep_logits, should_stop,
                                       None if visible is None else torch.cat([visible, visible.new_ones(len(qseg))]))
            self._track_device()
        finally:
            self.cache.truncate(length)
        self.tick += 1
        gone = {b.id for b in hidden}
        evidence = [e for e in self._evidence(selections) if e.block_id not in gone]
        kept = {b.id: b.kept for b in self.region.blocks if b.kind == "patch" and b.id not in gone}
        kept.update({s.block_id: self.blocks[s.block_id].kept for s in selections})
        return Answer(text=out.text, token_ids=out.token_ids, ttft_s=t_ret + t_pre + out.first_token_s,
                      prefill_s=t_pre, decode_s=out.decode_s, retrieval_s=t_ret, evidence=evidence,
                      memory=self._refresh_stats(), stopped=out.stopped, logits=out.logits, question_tokens=len(qseg),
                      context_tokens=context, kept=kept)

    def _targets(self, blocks: list[Block]) -> list[int | None]:
        """Model positions for retrieved blocks: their own (keep), or packed just before the window
        (contiguous, and for keep-mode blocks further back than rebase_limit)."""
        if not blocks:
            return []
        window = [b for b in self.region.blocks if b.kind == "patch" and not b.is_sink]
        anchor = (window[0].pos_start - self.base) if window else self.next_position
        far = self.next_position - self.cfg.rebase_limit
        if self.cfg.positions == "keep" and all(b.pos_start - self.base >= far for b in blocks):
            return [None] * len(blocks)
        out, pos = [], anchor - sum(b.span for b in blocks)
        for b in blocks:
            out.append(pos)
            pos += b.span
        return out

    def _evidence(self, selections: list[Selection]) -> list[Evidence]:
        ev = []
        for b in self.region.blocks:
            if b.kind != "patch":
                continue
            reason = "sink" if b.is_sink else "window"
            ev.append(Evidence(b.id, b.t_start, b.t_end, reason))
        for s in selections:
            b = self.blocks[s.block_id]
            ev.append(Evidence(b.id, b.t_start, b.t_end, s.reason, s.score))
        return sorted(ev, key=lambda e: e.t_start)
