"""Encoding a temporal patch into a BlockStore: plan, forward over sinks + window, new block, window policy."""

from __future__ import annotations

import torch

from longwatch.backbone.hooks import QKCapture
from longwatch.backbone.model import Backbone
from longwatch.backbone.prefill import prefill
from longwatch.backbone.preprocess import vision_tokens
from longwatch.backbone.prompt import Segment
from longwatch.backbone.rope import rope_text
from longwatch.ingest.types import TemporalPatch
from longwatch.memory.block import Block
from longwatch.memory.budget import plan_device
from longwatch.memory.config import MemoryConfig
from longwatch.memory.policies import Exit, Policy, leaving_window
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

    @property
    def wants_prerope(self) -> bool:
        """Summaries from pre-RoPE keys (position-agnostic): the forward must capture them."""
        return self.policy.retrieves and self.cfg.retrieval_keys == "prerope"

    def plan_for(self, size: tuple[int, int]) -> None:
        """Budget the device tier for frames of `size` (raises ConfigError naming the setting)."""
        plan = plan_device(self.cfg, self.bb.dims.bytes_per_token, vision_tokens(size), len(self.prefix), self.bb.name)
        self.store.set_plan(plan, size)

    def encode(self, patch: TemporalPatch) -> Block:
        """Encode one temporal patch attending to sinks + window; then apply the policy."""
        with self.bb.lock:
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
            prefill(self.bb.model, cache, [seg], start, None)
        pos = torch.arange(start, start + len(seg))
        queries = torch.stack([rope_text(self.bb.rotary_emb, q, pos) for q in cap.queries])
        return self.policy.score_exit(keys, queries)
