"""Fidelity of a memory policy to the full context, measurable with random weights.

- KL(reference || policy) and top-1 agreement of the answer-token distributions: the reference is a
  single non-streaming forward over the whole video, the question and the policy's own answer
  (teacher forcing), so both sides predict the same tokens.
- Attention-mass recall: of the attention the reference's question tokens pay to video tokens
  (softmax over the context, per layer and head, averaged), the share that lands on tokens the
  policy still had in its context (blocks retrieved, in the window or in compressed memory, and for
  compressed blocks only the vision tokens they kept).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from longwatch.backbone.inputs import Segment, rope_text
from longwatch.backbone.model import Backbone, QKCapture, prefill


def token_kl_top1(ref_logits: torch.Tensor, pol_logits: list[torch.Tensor]) -> dict:
    """ref_logits [n, vocab] and the policy's per-step logits -> mean KL(ref || policy), top-1 agreement."""
    n = min(len(pol_logits), ref_logits.shape[0])
    if n == 0:
        return {"kl": None, "top1": None, "steps": 0}
    ref = torch.log_softmax(ref_logits[:n].float(), -1)
    pol = torch.log_softmax(torch.stack([p.float() for p in pol_logits[:n]]).to(ref.device), -1)
    kl = (ref.exp() * (ref - pol)).sum(-1).clamp_min(0)
    top1 = (ref.argmax(-1) == pol.argmax(-1)).float()
    return {"kl": kl.mean().item(), "top1": top1.mean().item(), "steps": n}


def attention_recall(queries: torch.Tensor, keys: torch.Tensor, kept: torch.Tensor, video: torch.Tensor) -> float:
    """queries [layers, heads, T, D] and keys [layers, kv_heads, N, D] post-RoPE; kept [layers, N] bool;
    video [N] bool. Share of question-to-video attention mass on kept video tokens."""
    layers, heads, t, d = queries.shape
    kv = keys.shape[1]
    q = queries.float().view(layers, kv, heads // kv, t, d)
    p = torch.softmax(torch.einsum("lgrtd,lgnd->lgrtn", q, keys.float()) / d**0.5, dim=-1)
    on_video = (p * video.view(1, 1, 1, 1, -1)).sum(-1)
    on_kept = (p * (kept & video).view(layers, 1, 1, 1, -1)).sum(-1)
    return (on_kept / on_video.clamp_min(1e-12)).mean().item()


@dataclass
class Reference:
    logits: torch.Tensor
    """[len(answer) + 1, vocab]: predictions for each answer token and the one after."""
    queries: torch.Tensor
    """[layers, heads, question tokens, head_dim] post-RoPE."""
    keys: torch.Tensor
    """[layers, kv_heads, context tokens, head_dim] post-RoPE (prefix + video)."""
    spans: list[tuple[int, int, int, int]]
    """Per video block: (start, n_head, n_vis, n_tail) in the context."""
    context: int


@torch.no_grad()
def reference(bb: Backbone, segments: list[Segment], question: Segment, answer_ids: list[int]) -> Reference:
    """One non-streaming forward over prefix + patches + question + answer (segments[0] is the prefix)."""
    answer = bb.layout.text_segment("")
    if answer_ids:
        ids = torch.tensor(answer_ids, dtype=torch.long)
        answer = Segment(ids, torch.zeros_like(ids, dtype=torch.int32),
                         torch.arange(len(ids)).view(1, -1).expand(3, -1).clone(), len(ids), kind="answer")
    parts = segments + [question] + ([answer] if answer_ids else [])
    cache = bb.new_cache()
    with QKCapture(bb.model, queries=True) as cap:
        r = prefill(bb.model, cache, parts, 0, logits_to_keep=len(answer_ids) + 1)
    context = sum(len(s) for s in segments)
    spans, off = [], len(segments[0])
    for seg in segments[1:]:
        n_vis = int((seg.token_types == 2).sum())
        n_head = int(torch.nonzero(seg.token_types == 2)[0])
        spans.append((off, n_head, n_vis, len(seg) - n_head - n_vis))
        off += len(seg)
    q0 = context
    qpos = r.positions[0, q0: q0 + len(question)]
    queries = torch.stack([rope_text(bb.rotary_emb, q[q0: q0 + len(question)], qpos) for q in cap.queries])
    keys = torch.stack([cache.keys_view(i, 0, context) for i in range(cache.num_layers)])
    return Reference(r.logits, queries, keys, spans, context)


def kept_mask(ref: Reference, kept: dict[int, torch.Tensor | None], layers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept [layers, N], video [N]) token masks over the reference context; block i = video block i."""
    keep = torch.zeros(layers, ref.context, dtype=torch.bool)
    video = torch.zeros(ref.context, dtype=torch.bool)
    for i, (start, n_head, n_vis, n_tail) in enumerate(ref.spans):
        end = start + n_head + n_vis + n_tail
        video[start:end] = True
        if i not in kept:
            continue
        idx = kept[i]
        if idx is None:
            keep[:, start:end] = True
        else:
            keep[:, start: start + n_head] = True
            keep[:, end - n_tail: end] = True
            keep.scatter_(1, start + n_head + idx.long(), True)
    return keep, video


def measure(bb: Backbone, segments: list[Segment], question_text: str, answer) -> dict:
    """KL, top-1 and attention recall of `answer` (a MemoryStream Answer with logits) vs the full context."""
    ref = reference(bb, segments, bb.layout.question(question_text.strip()), list(answer.token_ids))
    out = token_kl_top1(ref.logits, answer.logits)
    keep, video = kept_mask(ref, answer.kept, bb.dims.num_layers)
    out["attn_recall"] = attention_recall(ref.queries, ref.keys, keep, video) if video.any() else None
    return out


class ReferenceProbe:
    """Beside a stream in `longwatch eval --fidelity`: keeps every patch, measures each answer."""

    def __init__(self, bb: Backbone) -> None:
        self.bb = bb
        self.segments: list[Segment] = [bb.layout.prefix()]

    def ingest(self, patch) -> None:
        self.segments.append(self.bb.patch_segment(patch.frames, patch.t_start, patch.t_end,
                                                   (patch.height, patch.width), patch.t_mid))

    def measure(self, prompt: str, answer) -> dict:
        with self.bb.lock:
            return measure(self.bb, self.segments, prompt, answer)

    def close(self) -> None:
        self.segments = []


def make_probe(backbone: Backbone, config) -> ReferenceProbe:
    """The fidelity hook eval/runner.py calls once per streamed video."""
    return ReferenceProbe(backbone)
