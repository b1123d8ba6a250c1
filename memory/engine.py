"""The two model passes over a BlockStore: a temporal patch in (`Encoder`), a question out (`Answerer`).

Encoding: plan, forward over sinks + window, new block, window policy. Answering: retrieval, the
question's cache, decoding, evidence. Both hold no block state: the store does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from longwatch.backbone.choices import ChoiceResult, choice_ids, choice_table, score_choices
from longwatch.backbone.inputs import Segment, apply_shift, rope_text, shift_cos_sin, vision_tokens
from longwatch.backbone.model import Backbone, DecodeResult, QKCapture, Sampling, decode, prefill
from longwatch.ingest.patches import TemporalPatch
from longwatch.memory.answer import YES_NO, Answer, Evidence, YesNo  # noqa: F401 - re-exported: callers import them from here
from longwatch.memory.block import DISK, HOST, MEMORY, Block, IndexCost, placement, plan_device
from longwatch.memory.config import MemoryConfig
from longwatch.memory.policies import Exit, Policy, Selection, leaving_window
from longwatch.memory.retrieval import parse_time_ranges, question_query, spread
from longwatch.memory.schema import ConfigError
from longwatch.memory.store import BlockStore


class Encoder:
    """Writes each temporal patch of one stream into its BlockStore.

    A patch's forward attends to the cache as it stands, [prefix | sinks | window], so its cost does
    not grow with the stream; its K/V become one block. The policy then decides which blocks leave
    the window (oldest first, sinks never) and how (drop, offload, compress), and the store carries
    that out. The device tier is planned from the first patch's frame size and checked before any
    forward; positions are re-based before they pass `cfg.rebase_limit`. Holds no block state: the
    store does.
    """

    def __init__(self, backbone: Backbone, store: BlockStore, cfg: MemoryConfig, policy: Policy) -> None:
        self.bb, self.store, self.cfg, self.policy = backbone, store, cfg, policy
        self.prefix = backbone.layout.prefix()
        self.after_commit: Callable[[Block, TemporalPatch], None] | None = None
        """Called with each new block and its patch once the window policy ran (streamchat's captions, videorag's
        frames: memory/captions.py, memory/videorag.py)."""

    @property
    def wants_prerope(self) -> bool:
        """Summaries from pre-RoPE keys (position-agnostic): the forward must capture them."""
        return self.policy.retrieves and self.cfg.retrieval_keys == "prerope"

    def plan_for(self, size: tuple[int, int]) -> None:
        """Budget the device tier for frames of `size` (raises ConfigError naming the setting)."""
        index = self.store.index
        cost = IndexCost(index.entry_bytes, index.on_device) if index is not None else None
        plan = plan_device(self.cfg, self.bb.dims.bytes_per_token, vision_tokens(size), len(self.prefix), self.bb.name,
                           cost)
        trained = self.bb.max_positions
        if self.store.bounded and self.cfg.rebase_limit + self.cfg.answer_tokens > trained:
            raise ConfigError(f"memory.rebase_limit: {self.cfg.rebase_limit} + answer_tokens {self.cfg.answer_tokens} "
                              f"passes {self.bb.name}'s {trained} trained positions; use at most "
                              f"{trained - self.cfg.answer_tokens}")
        self.store.set_plan(plan, size)

    def encode(self, patch: TemporalPatch) -> Block:
        """Encode one temporal patch attending to sinks + window; then apply the policy."""
        with self.store.lock, self.bb.lock:
            seg = self.prepare(patch)
            with QKCapture(self.bb.model, keys=self.wants_prerope) as cap:
                prefill(self.bb.model, self.store.cache, [seg], self.store.next_position, None)
            return self.commit(patch, seg, cap.keys if self.wants_prerope else None)

    def prepare(self, patch: TemporalPatch) -> Segment:
        """Everything before the patch's forward: frame-size plan, prompt prefix, segment, re-basing."""
        size = (patch.height, patch.width)
        if self.store.plan is None or self.store.state.size != size:
            self.plan_for(size)
        if not self.store.device_blocks:
            self._start()
        seg = self.bb.patch_segment(patch.frames, patch.t_start, patch.t_end, size, patch.t_mid)
        if self.store.next_position + seg.span > self.cfg.rebase_limit:
            self.store.rebase(self.store.next_position - self.cfg.rebase_limit // 2)
        return seg

    def commit(self, patch: TemporalPatch, seg: Segment, prerope: list[torch.Tensor] | None = None,
               kv: torch.Tensor | None = None) -> Block:
        """After the forward wrote the patch's K/V at the end of the cache (or with them as `kv`
        [layers, 2, kv_heads, n, head_dim]): hand the block to the store, apply the window policy."""
        st = self.store.state
        self.store.note_distance(reach(self.store, st.next_position + seg.span))
        n_vis = int((seg.token_types == 2).sum())
        n_head = int(torch.nonzero(seg.token_types == 2)[0]) if n_vis else len(seg)
        _, gh, gw = seg.grid_thw
        block = Block(id=st.next_id, kind="patch", t_start=patch.t_start, t_end=patch.t_end, t_mid=patch.t_mid,
                      pos_start=st.base + st.next_position, span=seg.span, n_head=n_head, n_vis=n_vis,
                      n_tail=len(seg) - n_head - n_vis, grid=(gh // 2, gw // 2), n_vis_orig=n_vis,
                      is_sink=st.next_id < self.cfg.sink_blocks, rot_base=st.base, created=st.tick,
                      last_used=st.tick, meta={"gap_before": getattr(patch, "gap_before", 0.0)})
        self.store.adopt(block, kv, prerope)
        for old in leaving_window(self.store.window, self.policy.window(self.cfg)):
            self._leave(old)
        self.store.refresh_stats()
        if self.after_commit is not None:
            self.after_commit(block, patch)
        return block

    def _start(self) -> None:
        seg, st = self.prefix, self.store.state
        prefill(self.bb.model, self.store.cache, [seg], st.next_position)
        self.store.adopt(Block(id=-1, kind="prefix", t_start=0.0, t_end=0.0, t_mid=0.0,
                               pos_start=st.base + st.next_position, span=seg.span, n_head=len(seg), n_vis=0,
                               n_tail=0, is_sink=True, rot_base=st.base))

    def _leave(self, block: Block) -> None:
        action = self.policy.on_exit
        if action is Exit.DROP:
            self.store.drop(block)
        elif action is Exit.OFFLOAD:
            self.store.offload(block)
        elif action is Exit.COMPRESS:
            self.store.compress(block, self._proxy_scores if self.policy.wants_proxy else None)

    def _proxy_scores(self, keys: torch.Tensor) -> torch.Tensor:
        """The policy's scores of a leaving block's vision keys against proxy queries: the template's
        generic turn opener run after the cache as it stands, post-RoPE [layers, heads, tokens, head_dim]."""
        seg, start = self.bb.layout.question(""), self.store.next_position
        with self.store.transient() as cache, QKCapture(self.bb.model, queries=True) as cap:
            length = cache.length
            prefill(self.bb.model, cache, [seg], start, None)
            pos = torch.arange(start, start + len(seg))
            queries = torch.stack([rope_text(self.bb.rotary_emb, q, pos) for q in cap.queries])
            context = [cache.keys_view(i, 0, length) for i in range(cache.num_layers)]
            return self.policy.score_exit(keys, queries, context)


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
            should_stop: Callable[[], bool] | None = None, until: float | None = None,
            window_only: bool = False, copy_limit: int | None = None, choices: Sequence[str] | None = None) -> Answer:
        """Answer `question` from memory; the stream is unchanged afterwards (question and answer are transient).

        `choices`: the answer is one of them, picked by the model's probability of answering each whole
        (backbone.choices.score_choices; one short forward per choice, in place of decoding; `on_text` gets the
        pick at once).

        `now` (seconds) anchors "5 minutes ago"; default: the newest ingested time. `until` hides
        every block that starts at or after it (an upload encoded ahead of its play position: the
        answer sees only what has played). `window_only`: answer from the prefix, sinks and window alone
        (no retrieval, no compressed memory): what is on screen now.

        Locks: this stream's lock, then the model lock for each forward only (retrieval, the question's prefill,
        every decode step), so other streams encode between this answer's tokens. The stream stays held until
        the answer ends, unless its question cache plus the answer fits `copy_limit` bytes (default:
        memory.answer_copy_budget): then it decodes on a copy (outside the tiers' budgets; its time counts in
        ttft_s), in a row of the backbone's AnswerRows if they fit memory.answer_batch_budget (answers at once
        share each decode forward), while the stream goes on ingesting; the answer is the memory as it was.
        """
        store = self.store
        copy_limit = self.cfg.answer_copy_budget if copy_limit is None else copy_limit
        picks = choice_ids(self.bb.layout, choices, self.cfg.answer_tokens // 2) if choices is not None else None
        with contextlib.ExitStack() as held:
            held.enter_context(store.lock)
            prep = self._prepare(question, now, sampling, until, window_only, held)
            if picks is not None:  # scored in place: a few short forwards, no decoding to copy the cache for
                res = score_choices(self.bb.model, store.cache, prep.logits, prep.next_position, picks,
                                    self.bb.layout.im_end, prep.sampling, prep.visible, self.bb.lock)
                held.close()
                return self._chosen(list(choices or []), picks, res, prep, on_text)
            cache, copied, t_copy, row, rows = store.cache, 0, time.perf_counter(), None, self.bb.rows
            new = prep.sampling.max_new_tokens
            need = (cache.length + new) * cache.bytes_per_token
            if copy_limit and need <= copy_limit:
                row = rows.join(cache, new, self.cfg.answer_batch_budget, prep.visible)
                cache, copied = cache if row else cache.copy(cache.length + new), need
                held.close()  # the question leaves the stream's cache, and the stream is free
            t_copy = time.perf_counter() - t_copy
            try:
                out: DecodeResult = decode(self.bb.model, cache, prep.logits, prep.next_position, self.bb.tokenizer,
                                           self.bb.layout.stop_ids, prep.sampling, on_text, keep_logits, should_stop,
                                           prep.visible, self.bb.lock, stepper=row and (lambda t, p: rows.step(row, t, p)))
            finally:
                if row:
                    rows.leave(row)
        with store.lock:
            store.note_distance(prep.distance + len(out.token_ids))
            store.advance_clock()
            memory = store.refresh_stats()
        return Answer(text=out.text, token_ids=out.token_ids, ttft_s=prep.retrieval_s + prep.prefill_s + t_copy + out.first_token_s,
                      prefill_s=prep.prefill_s, decode_s=out.decode_s, retrieval_s=prep.retrieval_s,
                      evidence=prep.evidence, memory=memory, stopped=out.stopped, logits=out.logits,
                      question_tokens=prep.question_tokens, context_tokens=prep.context_tokens, kept=prep.kept,
                      copied_bytes=copied)

    def _chosen(self, choices: list[str], picks: list[list[int]], res: ChoiceResult, prep: "_Prepared",
                on_text: Callable[[str], None] | None) -> Answer:
        store = self.store
        text = choices[res.index].strip()
        if on_text is not None:
            on_text(text)
        with store.lock:
            store.note_distance(prep.distance + len(picks[res.index]))
            store.advance_clock()
            memory = store.refresh_stats()
        return Answer(text=text, token_ids=list(picks[res.index]), ttft_s=prep.retrieval_s + prep.prefill_s + res.seconds,
                      prefill_s=prep.prefill_s, decode_s=res.seconds, retrieval_s=prep.retrieval_s,
                      evidence=prep.evidence, memory=memory, stopped=True, question_tokens=prep.question_tokens,
                      context_tokens=prep.context_tokens, kept=prep.kept, choices=choice_table(choices, res))

    def yes_no(self, condition: str) -> YesNo:
        """P(Yes) for a yes/no `condition` about what is on screen now: one forward of the question over the
        prefix, sinks and window (no retrieval, no decoding), scored on the first token of "Yes" against
        "No". Its cost is bounded by the window, whatever the stream's length; the stream is unchanged."""
        text = condition.strip()
        if not text:
            raise ValueError("empty condition")
        if "yes or no" not in text.lower():
            text += YES_NO
        layout, store = self.bb.layout, self.store
        yes, no = layout.encode_text("Yes")[0], layout.encode_text("No")[0]
        with store.lock, self.bb.lock:
            if not store.device_blocks:
                raise ValueError("no video has been ingested yet")
            qseg = layout.question(text)
            with store.transient() as cache:
                r = prefill(self.bb.model, cache, [qseg], store.next_position)
                store.note_distance(reach(store, r.next_position))
            pair = r.logits[-1][[yes, no]].float()
            newest = store.window[-1] if store.window else store.device_blocks[-1]
            return YesNo(float(torch.softmax(pair, 0)[0]), float(pair[0]), float(pair[1]), store.state.t_last,
                         Evidence(newest.id, newest.t_start, newest.t_end, "window"))

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

    def check(self, question: str, until: float | None = None) -> None:
        """Raise ValueError, as `ask` would before any forward, if `question` cannot be asked now: empty,
        nothing ingested, longer than half the answer reserve; and, when `until` is given, if it is before
        every patch (`ask` itself then answers from the prompt alone: the UI asks before anything has played)."""
        store = self.store
        if not question or not question.strip():
            raise ValueError("empty question")
        if not any(b.kind == "patch" for b in store.blocks.values()):
            raise ValueError("no video has been ingested yet")
        if until is not None and not any(b.kind == "patch" and b.t_start < until for b in store.blocks.values()):
            raise ValueError(f"until={until:g} s is before the first patch in memory: nothing has played yet")
        n = len(self.bb.layout.question(question.strip()))
        if n > self.cfg.answer_tokens // 2 and store.bounded:
            raise ValueError(f"question is {n} tokens; at most {self.cfg.answer_tokens // 2} fit the answer reserve")

    def _prepare(self, question: str, now: float | None, sampling: Sampling | None, until: float | None,
                 window_only: bool, held: contextlib.ExitStack) -> _Prepared:
        """Under the stream's lock: retrieval, blocks brought in, the question's prefill (model lock held for
        those forwards), and what the answer will report having seen. Enters store.transient() on `held`."""
        store = self.store
        self.check(question)
        t0 = time.perf_counter()
        t_last = store.state.t_last
        now = (t_last if until is None else min(t_last, until)) if now is None else now
        hidden = self._hidden(until)
        qseg = self.bb.layout.question(question.strip())
        cache = held.enter_context(store.transient())
        with self.bb.lock:
            selections = [] if window_only else self.select(question, qseg, now, until)
            chosen = sorted(selections, key=lambda s: store.blocks[s.block_id].t_start)
            blocks = [store.blocks[s.block_id] for s in chosen]
            targets = placement(blocks, store.window, store.next_position, store.base, self.cfg)
            for block, target in zip(blocks, targets):
                store.bring_in(block, target)
            starts = [b.pos_start - store.base if t is None else t for b, t in zip(blocks, targets)]
            t_ret = time.perf_counter() - t0
            visible = store.visible_mask(hidden)
            r = prefill(self.bb.model, cache, [qseg], store.next_position, visible=visible)
        t_pre = time.perf_counter() - t0 - t_ret
        samp = sampling or self.bb.sampling
        if store.bounded:
            samp = dataclasses.replace(samp, max_new_tokens=min(samp.max_new_tokens, self.cfg.answer_tokens - len(qseg)))
        gone = {b.id for b in hidden}
        evidence = [e for e in evidence_of(store.device_blocks, selections, store.blocks) if e.block_id not in gone]
        kept = {b.id: b.kept for b in store.device_blocks if b.kind == "patch" and b.id not in gone}
        kept.update({s.block_id: store.blocks[s.block_id].kept for s in selections})
        return _Prepared(
            logits=r.logits[-1], next_position=r.next_position, sampling=samp,
            visible=None if visible is None else torch.cat([visible, visible.new_ones(len(qseg))]),
            distance=reach(store, r.next_position, starts), retrieval_s=t_ret,
            prefill_s=t_pre, evidence=evidence, kept=kept, question_tokens=len(qseg),
            context_tokens=cache.length - len(qseg) - sum(b.n_tokens for b in hidden))


@dataclass
class _Prepared:
    """A question ready to decode: its first logits, where decoding goes on, and what the answer saw."""

    logits: torch.Tensor
    next_position: int
    sampling: Sampling
    visible: torch.Tensor | None
    distance: int  # largest query-to-key distance so far; each decoded token adds one
    retrieval_s: float
    prefill_s: float
    evidence: list[Evidence]
    kept: dict[int, torch.Tensor | None]
    question_tokens: int
    context_tokens: int


def reach(store: BlockStore, end: int, brought: Sequence[int] = ()) -> int:
    """The largest query-to-key distance of a forward whose last query is at model position `end - 1`, over
    the device blocks and blocks brought in at model positions `brought`."""
    starts = [b.pos_start - store.base for b in store.device_blocks] + list(brought)
    return end - 1 - min(starts) if starts else 0


def evidence_of(device_blocks: tuple[Block, ...], selections: list[Selection], blocks) -> list[Evidence]:
    """What an answer saw, in time order: sinks and window on the device, then the selected blocks."""
    ev = [Evidence(b.id, b.t_start, b.t_end, "sink" if b.is_sink else "window") for b in device_blocks
          if b.kind == "patch"]
    for s in selections:
        b = blocks[s.block_id]
        ev.append(Evidence(b.id, b.t_start, b.t_end, s.reason, s.score))
    return sorted(ev, key=lambda e: e.t_start)
