"""Stateful memory against the stateless way of serving video (an emulation of vLLM's and SGLang's), per question.

What is measured, in one process on one backbone, at each video length L:

- stateful: a MemoryStream (the run config's policy; the server's default is rekv) that ingested the video
  up to L as it arrived, asked one question: its TTFT (retrieval + question prefill + first token) and the
  tokens it prefills (the question's). The video's own encode was paid once, as it arrived, and is
  reported apart (ingest seconds per patch), not per question.
- stateless (EMULATED, not vLLM or SGLang themselves): an OpenAI-compatible server without memory gets the
  whole video so far with every question, so each question encodes it into a fresh cache: preprocessing,
  ViT and LLM prefill of every patch, by exact chunked prefill (whole temporal patches per chunk, about
  `chunk_tokens` tokens each, as chunked prefill batches tokens), then the question's prefill and the first
  token. TTFT = all of that. Prefix caching cannot help it: a grown video is a new multimodal item.

The emulation's first logits equal a `full` MemoryStream's (the project's exact streaming prefill) on the
same patches; `check_exact` measures that. Patches are the server's kind (two frames at the stream's fixed
size) drawn in memory (eval/synthetic.py); drawing them is not timed.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from longwatch.backbone.inputs import Segment
from longwatch.backbone.model import Backbone, Sampling, prefill
from longwatch.eval.flops import llm_flops, vit_flops
from longwatch.ingest.patches import TemporalPatch
from longwatch.memory.config import MemoryConfig
from longwatch.memory.stream import MemoryStream

QUESTION = "What did the sign say a minute ago?"
LABEL = ("EMULATION of stateless OpenAI-compatible serving (vLLM / SGLang today): every question re-sends the "
         "whole video so far, encoded into a fresh cache by exact chunked prefill on the same backbone; "
         "not measured on vLLM or SGLang")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Encoded:
    """A fresh cache holding the prompt prefix and the first `patches` patches of a video."""

    cache: object
    next_position: int
    patches: int
    reached_s: float
    """End of the last patch encoded, video seconds."""
    tokens: int
    """Tokens prefilled (prefix + every patch segment)."""
    seconds: float
    """Preprocessing and forwards (ViT + LLM), timed; drawing the frames is not."""
    flops: float
    complete: bool
    """False when the time limit stopped it before the last patch."""


Item = tuple[TemporalPatch, Segment]


def chunks(items: Iterable[Item], chunk_tokens: int) -> Iterator[list[Item]]:
    """Whole segments, about chunk_tokens tokens per chunk (at least one segment each): chunked prefill stays exact."""
    chunk, n = [], 0
    for item in items:
        if chunk and n + len(item[1]) > chunk_tokens:
            yield chunk
            chunk, n = [], 0
        chunk.append(item)
        n += len(item[1])
    if chunk:
        yield chunk


def encode_fresh(bb: Backbone, patches: Iterable[TemporalPatch], chunk_tokens: int,
                 limit_s: float | None = None) -> Encoded:
    """Encode `patches` into a fresh cache after the prompt prefix, chunk by chunk; stop past limit_s seconds."""
    vision, text = bb.model.config.vision_config, bb.model.config.text_config
    clock = {"s": 0.0}
    t0 = time.perf_counter()
    cache = bb.new_cache()
    prefix = bb.layout.prefix()
    pos = prefill(bb.model, cache, [prefix], 0, None).next_position
    flops, tokens, n_patches, reached = llm_flops(text, len(prefix), 0), len(prefix), 0, 0.0
    _sync(bb.device)
    clock["s"] += time.perf_counter() - t0

    def segments() -> Iterator[Item]:
        for p in patches:  # the frames are drawn outside the clock; preprocessing is inside it
            t = time.perf_counter()
            seg = bb.patch_segment(p.frames, p.t_start, p.t_end, (p.height, p.width), p.t_mid)
            clock["s"] += time.perf_counter() - t
            yield p, seg

    complete = True
    for chunk in chunks(segments(), chunk_tokens):
        segs = [seg for _, seg in chunk]
        n = sum(len(seg) for seg in segs)
        t = time.perf_counter()
        pos = prefill(bb.model, cache, segs, pos, None).next_position
        _sync(bb.device)
        clock["s"] += time.perf_counter() - t
        flops += llm_flops(text, n, tokens) + sum(vit_flops(vision, seg.grid_thw[1], seg.grid_thw[2]) for seg in segs)
        tokens += n
        n_patches += len(chunk)
        reached = chunk[-1][0].t_end
        if limit_s is not None and clock["s"] > limit_s:
            complete = False
            break
    return Encoded(cache, pos, n_patches, reached, tokens, clock["s"], flops, complete)


def first_token(bb: Backbone, enc: Encoded, question: str) -> tuple[torch.Tensor, int, float, float]:
    """The question prefilled after the encoded video, as a `full` memory answers it: (first logits, question
    tokens, seconds, FLOPs); the first token is their argmax (greedy)."""
    qseg = bb.layout.question(question.strip())
    t = time.perf_counter()
    logits = prefill(bb.model, enc.cache, [qseg], enc.next_position).logits[-1]
    int(logits.argmax())  # the first token, sampled greedily (a host sync, as decode's first token is)
    return logits, len(qseg), time.perf_counter() - t, llm_flops(bb.model.config.text_config, len(qseg), enc.tokens)


def stateless_question(bb: Backbone, patches: Iterable[TemporalPatch], minutes: float, chunk_tokens: int,
                       limit_s: float | None, question: str = QUESTION) -> dict:
    """One emulated stateless question at `minutes` of video: a fresh encode, the question's prefill, the first
    token. Past limit_s seconds of encoding it stops and says how far it got (no TTFT, nothing extrapolated)."""
    enc = encode_fresh(bb, patches, chunk_tokens, limit_s)
    row = {"minutes": minutes, "complete": enc.complete, "patches": enc.patches,
           "reached_minutes": round(enc.reached_s / 60, 3), "encode_s": enc.seconds,
           "video_tokens_prefilled": enc.tokens, "kv_bytes": enc.tokens * bb.dims.bytes_per_token}
    if not enc.complete:
        return row | {"ttft_s": None, "tokens_prefilled": enc.tokens, "forward_s": enc.seconds, "flops": enc.flops}
    _, q_tokens, q_s, q_flops = first_token(bb, enc, question)
    return row | {"question_tokens": q_tokens, "question_s": q_s, "ttft_s": enc.seconds + q_s,
                  "tokens_prefilled": enc.tokens + q_tokens, "forward_s": enc.seconds + q_s,
                  "flops": enc.flops + q_flops}


def stateful_questions(bb: Backbone, cfg: MemoryConfig, patches: Iterable[TemporalPatch], marks: list[float],
                       question: str = QUESTION) -> tuple[list[dict], dict]:
    """One MemoryStream ingests the video as it arrives; at each mark (minutes) it is asked once.

    Returns a row per mark (TTFT, what it prefilled and attended) and the ingest cost, paid once per patch.
    """
    ms = MemoryStream(bb, cfg, stream_id="bench-serve-stateful")
    samp = Sampling(temperature=0.0, max_new_tokens=1)
    text = bb.model.config.text_config
    todo, rows, ingest_s, n = sorted(marks), [], 0.0, 0
    try:
        for p in patches:
            if not todo:
                break
            t = time.perf_counter()
            ms.ingest(p)
            _sync(bb.device)
            ingest_s += time.perf_counter() - t
            n += 1
            while todo and p.t_end >= todo[0] * 60 - 1e-6:
                a = ms.ask(question, sampling=samp)
                rows.append({"minutes": todo.pop(0), "patches": n, "ttft_s": a.ttft_s,
                             "retrieval_s": a.retrieval_s, "question_s": a.prefill_s,
                             "forward_s": a.retrieval_s + a.prefill_s, "question_tokens": a.question_tokens,
                             "tokens_prefilled": a.question_tokens, "context_tokens": a.context_tokens,
                             "flops": llm_flops(text, a.question_tokens, a.context_tokens),
                             "device_bytes": ms.stats()["tiers"]["device"]["bytes"]})
    finally:
        ms.close()
    return rows, {"policy": cfg.policy, "patches": n, "ingest_s": ingest_s, "ingest_s_per_patch": ingest_s / max(1, n)}


def check_exact(bb: Backbone, cfg: MemoryConfig, patches: list[TemporalPatch], chunk_tokens: int,
                question: str = QUESTION) -> dict:
    """The emulation against the project's `full` policy on the same patches: max |d first logits|, same token."""
    ms = MemoryStream(bb, dataclasses.replace(cfg, policy="full"), stream_id="bench-serve-exact")
    try:
        for p in patches:
            ms.ingest(p)
        ref = ms.ask(question, keep_logits=True, sampling=Sampling(temperature=0.0, max_new_tokens=1)).logits[0]
    finally:
        ms.close()
    logits, *_ = first_token(bb, encode_fresh(bb, patches, chunk_tokens), question)
    diff = float((logits.float().cpu() - ref.float().cpu()).abs().max())
    return {"patches": len(patches), "max_abs_logit_diff": diff,
            "same_first_token": int(logits.argmax()) == int(ref.argmax())}
