"""Several streams, one model: one batched forward encodes a patch of every stream at once.

Each stream keeps its own memory. For a batched step, every stream's live cache (sinks, memory,
window) is copied into one row of a transient batch cache, left-aligned; the new patches go after
the longest row. A 4D mask lets each row's patch see its own context and, causally, itself, and
nothing of the padding; positions are each stream's own. The new K/V are then appended to each
stream's cache and the stream records the block as after a single-stream forward, so the result
equals ingesting the patches one stream at a time (tested to 1e-4). Streams are used through their
public parts only: `encoder.prepare` / `encoder.commit` around the forward, `store.cache` read.

`BatchEncoder` is the live form: one thread that encodes, in each step, the waiting patch of every
stream it can take, so N live streams cost one forward per step rather than N.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field

import torch

from longwatch.backbone.cache import KVCache
from longwatch.backbone.inputs import Segment
from longwatch.backbone.model import QKCapture
from longwatch.ingest.patches import TemporalPatch
from longwatch.memory.block import Block
from longwatch.memory.schema import ConfigError, format_bytes
from longwatch.memory.stream import MemoryStream

_PAD = 151643  # <|endoftext|>; padded positions are masked out and their outputs discarded


def _batch_inputs(streams: list[MemoryStream], segs: list[Segment]) -> tuple[dict, list[int], int, int]:
    bb = streams[0].bb
    lens = [s.store.cache.length for s in streams]
    lmax, nmax = max(lens), max(len(seg) for seg in segs)
    b = len(streams)
    ids = torch.full((b, nmax), _PAD, dtype=torch.long)
    types = torch.zeros((b, nmax), dtype=torch.int32)
    pos = torch.zeros((3, b, nmax), dtype=torch.long)
    mask = torch.zeros((b, 1, nmax, lmax + nmax), dtype=torch.bool)
    causal = torch.tril(torch.ones(nmax, nmax, dtype=torch.bool))
    for i, (s, seg) in enumerate(zip(streams, segs)):
        n = len(seg)
        ids[i, :n], types[i, :n] = seg.input_ids, seg.token_types
        p = seg.positions + s.store.next_position
        pos[:, i, :n] = p
        pos[:, i, n:] = p[:, -1:]  # padding: any position, its outputs are dropped
        mask[i, 0, :, : lens[i]] = True
        mask[i, 0, :, lmax:] = causal
    if bb.loaded.attn == "eager":
        mask = torch.where(mask, 0.0, torch.finfo(bb.dtype).min).to(bb.dtype)
    inputs = {"input_ids": ids, "mm_token_type_ids": types, "position_ids": pos, "attention_mask": mask,
              "pixel_values_videos": torch.cat([seg.pixel_values for seg in segs]).to(bb.dtype),
              "video_grid_thw": torch.tensor([seg.grid_thw for seg in segs], dtype=torch.long)}
    return {k: v.to(bb.device) for k, v in inputs.items()}, lens, lmax, nmax


def _batch_cache(streams: list[MemoryStream], lmax: int, nmax: int) -> KVCache:
    """A transient cache whose row i holds stream i's live cache, left-aligned and zero-padded to the
    longest (masked keys still meet their values in the weighted sum: 0 * NaN garbage = NaN)."""
    bb = streams[0].bb
    d = bb.dims
    batch = KVCache(d.num_layers, d.kv_heads, d.head_dim, bb.dtype, bb.device, batch=len(streams), initial=lmax + nmax)
    for layer_idx, layer in enumerate(batch.layers):
        k = torch.zeros(len(streams), d.kv_heads, lmax, d.head_dim, dtype=bb.dtype, device=bb.device)
        v = torch.zeros_like(k)
        for i, s in enumerate(streams):
            src = s.store.cache.layers[layer_idx]  # [1, kv_heads, length, head_dim] live views
            k[i, :, : src.keys.shape[2]] = src.keys[0]
            v[i, :, : src.values.shape[2]] = src.values[0]
        layer.update(k, v)
    return batch


def batch_bytes(streams: list[MemoryStream], segs: list[Segment]) -> int:
    """Bytes of the transient batch cache for these streams and segments (rows padded to the longest)."""
    lmax = max(s.store.cache.length for s in streams)
    nmax = max(len(seg) for seg in segs)
    return len(streams) * (lmax + nmax) * streams[0].bb.dims.bytes_per_token


def split_for_budget(streams: list[MemoryStream], segs: list[Segment], budget: int) -> list[tuple[list[int], int]]:
    """Stream indices grouped into consecutive batches whose transient cache fits `budget` bytes, each with
    its size in bytes."""
    size = lambda g: batch_bytes([streams[j] for j in g], [segs[j] for j in g])  # noqa: E731
    groups: list[tuple[list[int], int]] = []
    for i in range(len(streams)):
        trial = groups[-1][0] + [i] if groups else [i]
        need = size(trial)
        if groups and need <= budget:
            groups[-1] = (trial, need)
            continue
        alone = size([i])
        if alone > budget:
            raise ConfigError(f"batch_budget: {format_bytes(budget)} cannot hold one stream's batch copy "
                              f"({format_bytes(alone)}: its live cache plus the new patch)")
        groups.append(([i], alone))
    return groups


@torch.no_grad()
def ingest_batch(streams: list[MemoryStream], patches: list[TemporalPatch], budget: int | None = None,
                 report: dict | None = None) -> list[Block]:
    """Ingest patches[i] into streams[i] (MemoryStreams sharing one backbone), batched; returns blocks.

    The transient batch cache copies every stream's live cache, outside each stream's own budget, so it
    has its own: `budget` bytes (default: the first stream's device budget), and streams are split into
    as many forwards as it takes to stay inside it. `report`, when given, receives the step's forwards,
    its largest batch cache in bytes and the budget. The first failure is raised (ingest_settled keeps
    each failure with its stream).
    """
    out = ingest_settled(streams, patches, budget, report)
    for r in out:
        if isinstance(r, Exception):
            raise r
    return out  # type: ignore[return-value]


@torch.no_grad()
def ingest_settled(streams: list[MemoryStream], patches: list[TemporalPatch], budget: int | None = None,
                   report: dict | None = None) -> list[Block | Exception]:
    """As ingest_batch, but each stream gets its block or its own exception and the others go on.

    A patch that cannot be prepared (a frame size the memory cannot hold) or whose stream alone exceeds
    `budget` fails that stream only; a failed forward fails the streams of that forward, none of which
    has written anything to its memory by then. Locks: every stream's own (in a fixed order), then the
    model's, as a single-stream ingest takes them.
    """
    if len(streams) != len(patches) or not streams:
        raise ValueError("one patch per stream")
    if len({id(s) for s in streams}) != len(streams):
        raise ValueError("a stream appears twice in one batched step")
    bb = streams[0].bb
    if any(s.bb is not bb for s in streams):
        raise ValueError("batched streams must share one backbone")
    if bb.loaded.attn == "flash_attention_2":
        raise ValueError("multi-stream batching needs a 4D mask: use attn sdpa or eager")
    budget = streams[0].cfg.device_budget if budget is None else budget
    out: dict[int, Block | Exception] = {}
    with contextlib.ExitStack() as held:
        for s in sorted(streams, key=id):
            held.enter_context(s.lock)
        held.enter_context(bb.lock)
        segs: dict[int, Segment] = {}
        for i, (s, p) in enumerate(zip(streams, patches)):
            try:
                segs[i] = s.encoder.prepare(p)
                alone = batch_bytes([s], [segs[i]])
                if alone > budget:
                    raise ConfigError(f"batch_budget: {format_bytes(budget)} cannot hold one stream's batch copy "
                                      f"({format_bytes(alone)}: its live cache plus the new patch)")
            except Exception as e:
                segs.pop(i, None)
                out[i] = e
        ok = sorted(segs)
        groups = split_for_budget([streams[i] for i in ok], [segs[i] for i in ok], budget) if ok else []
        for g, _ in groups:
            idx = [ok[j] for j in g]
            try:
                out.update(zip(idx, _forward([streams[i] for i in idx], [segs[i] for i in idx],
                                             [patches[i] for i in idx])))
            except Exception as e:
                out.update((i, e) for i in idx)
        if report is not None:
            report.update(forwards=len(groups), peak_bytes=max((n for _, n in groups), default=0), budget=budget)
    return [out[i] for i in range(len(streams))]


def _forward(streams: list[MemoryStream], segs: list[Segment], patches: list[TemporalPatch]) -> list[Block | Exception]:
    """One batched forward of prepared segments; commits each stream's block (a failed commit is that
    stream's result)."""
    bb = streams[0].bb
    inputs, lens, lmax, nmax = _batch_inputs(streams, segs)
    batch = _batch_cache(streams, lmax, nmax)
    wants = any(s.encoder.wants_prerope for s in streams)
    with QKCapture(bb.model, keys=wants, batch=True) as cap:
        bb.model.model(**inputs, past_key_values=batch, use_cache=True)  # cache only: no LM head
    blocks: list[Block | Exception] = []
    for i, (s, seg, patch) in enumerate(zip(streams, segs, patches)):
        n = len(seg)
        kv = torch.stack([torch.stack([layer.keys[i, :, lmax: lmax + n], layer.values[i, :, lmax: lmax + n]])
                          for layer in batch.layers])
        prerope = [k[i, :n] for k in cap.keys] if s.encoder.wants_prerope else None
        try:
            blocks.append(s.encoder.commit(patch, seg, prerope, kv))
        except Exception as e:
            blocks.append(e)
    return blocks


@dataclass
class _Job:
    stream: MemoryStream
    patch: TemporalPatch
    done: threading.Event = field(default_factory=threading.Event)
    result: Block | Exception | None = None


def _settle(job: _Job) -> Block | Exception:
    try:
        return job.stream.ingest(job.patch)
    except Exception as e:
        return e


IDLE_WAIT_S = 0.005
"""How long the encoder sleeps when every stream with a patch waiting is held by an answer."""


class BatchEncoder:
    """One thread encoding the patches of many streams on one backbone, batched.

    `submit(stream, patch)`, called from a stream's own ingest thread, blocks until the patch is in
    memory and returns its block (or raises that stream's failure, and only that stream's). Each step
    takes every stream with a patch waiting whose lock is free (a stream answered in place waits for
    its answer; one whose answer decodes on a copy does not) and runs them through ingest_settled: one
    forward for all of them, within `budget` bytes of batch copy (default: the largest device budget
    of the step's streams, whatever order they came in). Answers' decode steps and watches' checks interleave with these forwards through the
    model lock, which serves waiters in order.
    """

    def __init__(self, budget: int | None = None, name: str = "batch-encoder") -> None:
        self.budget = budget
        self.steps = 0
        """Batched steps run (each one forward or, past the budget, a few)."""
        self.patches = 0
        """Patches encoded (failures included)."""
        self.largest = 0
        """Most streams encoded in one step."""
        self._cond = threading.Condition()
        self._pending: dict[int, _Job] = {}  # id(stream) -> its one waiting patch, in arrival order
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, stream: MemoryStream, patch: TemporalPatch) -> Block:
        """Encode `patch` into `stream` in the next step that can take the stream; its block."""
        job = _Job(stream, patch)
        with self._cond:
            if self._closed:
                raise RuntimeError("the batch encoder is closed")
            if id(stream) in self._pending:
                raise ValueError("a patch of this stream is already waiting: submit one at a time")
            self._pending[id(stream)] = job
            self._cond.notify_all()
        job.done.wait()
        if isinstance(job.result, Exception):
            raise job.result
        assert job.result is not None
        return job.result

    def waiting(self) -> int:
        """Streams with a patch waiting for a step now."""
        with self._cond:
            return len(self._pending)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    for job in self._pending.values():
                        job.result = RuntimeError("the batch encoder was closed")
                        job.done.set()
                    self._pending.clear()
                    return
                jobs = list(self._pending.values())
            taken = [j for j in jobs if j.stream.lock.acquire(blocking=False)]
            if not taken:
                with self._cond:
                    self._cond.wait(IDLE_WAIT_S)
                continue
            try:
                with self._cond:
                    for j in taken:
                        del self._pending[id(j.stream)]
                results = self._step(taken)
            finally:
                for j in taken:
                    j.stream.lock.release()
            self.steps += 1
            self.patches += len(taken)
            self.largest = max(self.largest, len(taken))
            for j, r in zip(taken, results):
                j.result = r
                j.done.set()

    def _step(self, taken: list[_Job]) -> list[Block | Exception]:
        if taken[0].stream.bb.loaded.attn == "flash_attention_2":  # no 4D mask: one stream per forward
            return [_settle(j) for j in taken]
        try:
            budget = self.budget if self.budget is not None else max(j.stream.cfg.device_budget for j in taken)
            return ingest_settled([j.stream for j in taken], [j.patch for j in taken], budget)
        except Exception as e:  # refused as a whole (streams on different backbones): every stream fails
            return [e] * len(taken)

    def close(self, timeout: float = 5.0) -> None:
        """Stop; patches still waiting get an error."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
