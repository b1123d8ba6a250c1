"""Streaming benchmark runner: each video streams once per (policy, budget point); questions are asked at their time.

Protocol: before a patch whose start time is >= a question's ask time is ingested, the question is
asked, so the model has seen every patch that starts before the ask time (the patch holding the ask
time included, like OVO-Bench's [0, ceil(t)] clips) and nothing later; then the stream continues.
Questions without an ask time (offline sets) are asked after the last patch. Proactive questions
(StreamingBench) are polled every second from their time + 1 s to the ground-truth time + 4 s.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable, Protocol

from longwatch.eval.budgets import Budget
from longwatch.eval.formats.prompts import format_prompt, proactive_poll
from longwatch.eval.formats.schema import LETTERS, Bench, Question, Video
from longwatch.eval.scoring import Judge, score_question
from longwatch.eval.scoring_retrieval import needle_block_recall, retrieval_scores
from longwatch.memory.schema import ConfigError

log = logging.getLogger(__name__)


class Stream(Protocol):
    """What the runner needs from memory.stream.MemoryStream."""

    def ingest(self, patch: Any) -> None: ...
    def ask(self, question: str, on_text: Callable[[str], None] | None = None, keep_logits: bool = False,
            choices: list[str] | None = None) -> Any: ...
    def stats(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


class FidelityProbe(Protocol):
    """Contract for eval/fidelity.py's make_probe(backbone, config): a full-context reference beside the stream."""

    def ingest(self, patch: Any) -> None: ...
    def measure(self, prompt: str, answer: Any) -> dict[str, float]: ...
    def close(self) -> None: ...


StreamFactory = Callable[[Any, str], Stream]  # (MemoryConfig, stream_id) -> Stream
PatchOpener = Callable[[str], ContextManager[Iterable[Any]]]  # video path -> iterable of TemporalPatch


class FidelityUnavailable(RuntimeError):
    user_facing = True


class VideosNotFound(FileNotFoundError):
    """Annotated videos missing from --videos; the CLI prints it as one line, exit status 2."""

    user_facing = True


CHOICE_MODES = ("generate", "text", "letter")


@dataclass
class RunOptions:
    policies: list[str]
    budgets: list[Budget | int | None] = field(default_factory=lambda: [None])
    """Sweep points (eval/budgets.py): each sets some tiers' byte budgets, the others stay the config's; an int
    is a device budget, None the config's budgets."""
    fidelity: bool = False
    judge: Judge | None = None
    max_videos: int | None = None
    progress: bool | None = None
    """A bar per (policy, budget point) run on stderr; None: when stderr is a terminal (eval.progress.shown)."""
    choices: str = "generate"
    """Multiple-choice questions: "generate" (a free answer, parsed to a choice the benchmark's way), or the answer
    picked from the choices by the model's probability of each (Answerer.ask's `choices`): "text" scores the
    choices' texts, "letter" their letters A, B, ..."""


@dataclass
class RunResult:
    records: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    """Memory per tier after each patch: {policy, budget, budget_label, bench, video_id, t, device, host, disk}."""
    benches: list[dict[str, Any]] = field(default_factory=list)


def resolve_video(path: str, videos_dir: Path | None, bench_dir: Path) -> Path | None:
    """First existing candidate: as given, under videos_dir (full relative path, last two parts, name)."""
    p = Path(path)
    candidates = [p] if p.is_absolute() else [bench_dir / p]
    for root in [videos_dir] if videos_dir else []:
        rel = Path(*p.parts[1:]) if p.is_absolute() else p
        candidates += [root / rel, root / Path(*p.parts[-2:]), root / p.name]
    return next((c for c in candidates if c.is_file()), None)


def tier_bytes(memory: dict[str, Any] | None, key: str = "bytes") -> dict[str, int]:
    tiers = (memory or {}).get("tiers", {})
    return {t: int(v.get(key, 0) or 0) for t, v in tiers.items()}


def open_patches_default(cfg: Any) -> PatchOpener:
    """Files through ingest.open_stream; .npy frame tensors (RVS-Movie) as 1 fps frames."""

    def opener(path: str) -> ContextManager[Iterable[Any]]:
        if path.endswith(".npy"):
            return contextlib.nullcontext(npy_patches(path, cfg.ingest.frame_size))
        from longwatch.ingest import open_stream

        return open_stream(path, cfg.ingest)

    return opener


def npy_patches(path: str, frame_size: str, fps: float = 1.0) -> Iterable[Any]:
    """Pre-extracted frames [N, H, W, 3] uint8 at `fps` (ReKV's .npy convention) as TemporalPatches."""
    import numpy as np

    from longwatch.ingest.patches import TemporalPatch, resize_frames, snap_frame_size

    frames = np.load(path, mmap_mode="r")
    size = snap_frame_size(frames.shape[1], frames.shape[2], frame_size)
    for i in range(0, len(frames) - 1, 2):
        pair = resize_frames(np.ascontiguousarray(frames[i : i + 2]), size).permute(0, 2, 3, 1).numpy()
        t0, t1 = i / fps, (i + 1) / fps
        yield TemporalPatch(i // 2, pair, (t0, t1), t0, t1 + 1 / fps)


def _inference_mode() -> ContextManager[Any]:
    """torch.inference_mode when torch is importable (evaluation never needs gradients)."""
    try:
        import torch
    except ImportError:
        return contextlib.nullcontext()
    return torch.inference_mode()


class Runner:
    """Runs benchmarks through MemoryStreams. Every collaborator is injectable, so tests use fakes."""

    def __init__(self, config: Any, stream_factory: StreamFactory, open_patches: PatchOpener,
                 fidelity_factory: Callable[[], FidelityProbe] | None = None,
                 preflight: Callable[[Any, Path], None] | None = None) -> None:
        self.config = config
        self.preflight = preflight
        """preflight(mem_cfg, video path) raises when that combination cannot run (a budget too small),
        so a sweep fails before its first video rather than halfway through."""
        self.stream_factory = stream_factory
        self.open_patches = open_patches
        self.fidelity_factory = fidelity_factory

    def run(self, benches: list[Bench], videos_dir: str | Path | None, opts: RunOptions) -> RunResult:
        from longwatch.eval.progress import bar

        if opts.choices not in CHOICE_MODES:
            raise ConfigError(f"choices: {opts.choices!r} is not one of {', '.join(CHOICE_MODES)}")
        result = RunResult(benches=[b.summary() for b in benches])
        plan = self._plan(benches, videos_dir, opts)
        n_q = sum(len(v.questions) for _, v, _ in plan)
        combos = [(p, b) for p in opts.policies for b in dict.fromkeys(Budget.of(b) for b in opts.budgets)]
        configs = {c: self._memory_config(*c) for c in combos}
        if self.preflight is not None:
            for mem_cfg in configs.values():
                for _, _, path in plan:
                    self.preflight(mem_cfg, path)
        for run, (policy, budget) in enumerate(combos, 1):
            mem_cfg = configs[(policy, budget)]
            label = policy if budget == Budget() else f"{policy}@{budget.label}"
            with bar(n_q, unit="q", force=opts.progress) as qbar:
                for i, (bench, video, path) in enumerate(plan, 1):
                    qbar.set_description(f"run {run}/{len(combos)} {label}: video {i}/{len(plan)}")
                    self._video(bench, video, path, mem_cfg, budget, opts, result, qbar)
        return result

    def _memory_config(self, policy: str, point: Budget) -> Any:
        """The memory config of one run: the config's, with its policy and the tiers its point sets."""
        try:
            return point.apply(self.config.memory, policy=policy)
        except ValueError as e:  # MemoryConfig's checks name the field: "disk_budget: videorag keeps ..."
            at = "" if point == Budget() else f" at budget {point.label}"
            raise ConfigError(f"{policy}{at}: memory.{e}") from None

    def _plan(self, benches: list[Bench], videos_dir: str | Path | None,
              opts: RunOptions) -> list[tuple[Bench, Video, Path]]:
        plan, missing = [], []
        vdir = Path(videos_dir) if videos_dir else None
        for bench in benches:
            for video in bench.videos[: opts.max_videos]:
                path = resolve_video(video.video_path, vdir, Path(bench.source).parent)
                (plan.append((bench, video, path)) if path else missing.append(video.video_path))
        if missing:
            raise VideosNotFound(f"{len(missing)} video(s) not found under {videos_dir or 'the annotation folder'}, "
                            f"e.g. {', '.join(missing[:3])} (point --videos at the folder that holds them)")
        return plan

    def _video(self, bench: Bench, video: Video, path: Path, mem_cfg: Any, budget: Budget, opts: RunOptions,
               result: RunResult, qbar: Any) -> None:
        with _inference_mode():
            ctx = _VideoRun(self, bench, video, mem_cfg, budget, opts, result, qbar)
            try:
                with self.open_patches(str(path)) as patches:
                    for patch in patches:
                        ctx.ask_due(patch.t_start)
                        ctx.ingest(patch)
                ctx.ask_due(math.inf)
            finally:
                ctx.close()


class _VideoRun:
    """One video streamed under one policy: pending questions, seen blocks, per-question records."""

    def __init__(self, runner: Runner, bench: Bench, video: Video, mem_cfg: Any, budget: Budget,
                 opts: RunOptions, result: RunResult, qbar: Any) -> None:
        self.bench, self.video, self.opts, self.result, self.qbar = bench, video, opts, result, qbar
        self.policy, self.budget = mem_cfg.policy, budget
        self.stream = runner.stream_factory(mem_cfg, f"{bench.name}/{video.video_id}/{mem_cfg.policy}")
        self.probe = runner.fidelity_factory() if opts.fidelity and runner.fidelity_factory else None
        self.blocks: list[tuple[float, float]] = []
        self.history: list[tuple[str, str]] = []
        self.t_seen = 0.0
        self.answered: set[str] = set()
        self.events = sorted(self._events(), key=lambda e: e[0])

    def _events(self) -> Iterable[tuple[float, int, Question, int]]:
        """(time, order, question, poll index or -1); proactive questions become 1 s polls."""
        for i, q in enumerate(self.video.questions):
            if q.kind == "proactive":
                start, last = int(q.ask_time_s or 0) + 1, int(q.extra["gt_time_s"]) + 4
                yield from ((float(t), i, q, k) for k, t in enumerate(range(start, last + 1)))
            else:
                yield (math.inf if q.ask_time_s is None else q.ask_time_s), i, q, -1

    def ingest(self, patch: Any) -> None:
        self.stream.ingest(patch)
        if self.probe:
            self.probe.ingest(patch)
        self.blocks.append((float(patch.t_start), float(patch.t_end)))
        self.t_seen = float(patch.t_end)
        st = self.stream.stats()
        self.result.timeline.append({"policy": self.policy, "budget": self.budget.device,
                                     "budget_label": self.budget.label, "bench": self.bench.name,
                                     "video_id": self.video.video_id, "t": self.t_seen, **tier_bytes(st)})

    def ask_due(self, t: float) -> None:
        while self.events and self.events[0][0] <= t:
            when, _, q, poll = self.events.pop(0)
            if poll < 0:
                self._ask(q, format_prompt(q, self.history if q.extra.get("sequential") else None), when)
            elif q.qid not in self.answered:
                ans = self.stream.ask(proactive_poll(q))
                if "yes" in (ans.text or "").lower():  # StreamingBench's rule for "it is time"
                    self.answered.add(q.qid)
                    self._ask(q, q.question, when, response_time=when, polls=poll + 1)
                elif not any(e[2] is q for e in self.events):  # last poll, never said yes
                    self.answered.add(q.qid)
                    self._record(q, proactive_poll(q), when, ans, "", polls=poll + 1)

    def _ask(self, q: Question, prompt: str, when: float, response_time: float | None = None,
             polls: int | None = None) -> None:
        mode = self.opts.choices
        if q.kind == "mc" and mode != "generate":
            picks = list(q.choices) if mode == "text" else list(LETTERS[:len(q.choices)])
            ans = self.stream.ask(prompt, keep_logits=self.probe is not None, choices=picks)
        else:
            ans = self.stream.ask(prompt, keep_logits=self.probe is not None)
        self._record(q, prompt, when, ans, ans.text or "", response_time, polls)

    def _record(self, q: Question, prompt: str, when: float, ans: Any, text: str,
                response_time: float | None = None, polls: int | None = None) -> None:
        s = score_question(q, text, self.bench.format, self.opts.judge, response_time_s=response_time)
        used = [(float(e.t_start), float(e.t_end)) for e in (getattr(ans, "evidence", None) or [])]
        rec = {
            "bench": self.bench.name, "format": self.bench.format, "policy": self.policy,
            "budget": self.budget.device, "budget_label": self.budget.label,  # budget: the device bytes it sets
            "video_id": self.video.video_id, "qid": q.qid, "task": q.task, "kind": q.kind,
            "ask_time_s": None if math.isinf(when) else when, "t_stream_s": self.t_seen, "question": q.question,
            "gold": q.answer_letter if q.kind == "mc" else q.answer, "reply": text, "pred": s.pred,
            "score": s.score, "correct": s.correct, "metrics": s.metrics,
            "ttft_s": getattr(ans, "ttft_s", None), "prefill_s": getattr(ans, "prefill_s", None),
            "decode_s": getattr(ans, "decode_s", None), "answer_tokens": len(getattr(ans, "token_ids", []) or []),
            "memory": tier_bytes(getattr(ans, "memory", None)), "peak": tier_bytes(getattr(ans, "memory", None), "peak"),
            "evidence": used, "extra": {k: v for k, v in q.extra.items() if isinstance(v, (str, int, float, bool))},
            "retrieval": None, "needle_recall": None, "fidelity": None,
        }
        if getattr(ans, "choices", None):
            rec["extra"]["choice_probs"] = json.dumps({c["choice"]: c["prob"] for c in ans.choices})
        if polls is not None:
            rec["metrics"]["polls"] = polls
        if q.evidence_windows and hasattr(ans, "evidence"):
            seen = [(a, min(b, self.t_seen)) for a, b in q.evidence_windows if a < self.t_seen]
            if seen:
                rec["retrieval"] = retrieval_scores(used, seen)
            rec["needle_recall"] = needle_block_recall(self.blocks, q.evidence_windows, used)
        if self.probe is not None:
            rec["fidelity"] = self.probe.measure(prompt, ans)
        self.result.records.append(rec)
        if q.extra.get("sequential"):
            self.history.append((q.question, text.strip()))
        self.qbar.update(1)

    def close(self) -> None:
        self.stream.close()
        if self.probe:
            self.probe.close()


def memory_stream_factory(backbone: Any) -> StreamFactory:
    """The real streams: memory.stream.MemoryStream on a loaded backbone."""
    from longwatch.memory.stream import MemoryStream

    return lambda mem_cfg, stream_id: MemoryStream(backbone, mem_cfg, stream_id=stream_id)


def budget_preflight(backbone: Any, config: Any) -> Callable[[Any, Path], None]:
    """Check a memory config against a video's frame size the way a stream does at its first patch."""
    from longwatch.backbone.inputs import vision_tokens
    from longwatch.ingest.patches import snap_frame_size
    from longwatch.ingest.sources import probe
    from longwatch.memory.block import IndexCost, plan_device
    from longwatch.memory.retrieval import FaissIndex, index_placement

    sizes: dict[Path, tuple[int, int]] = {}
    prefix = len(backbone.layout.prefix())  # what MemoryStream puts before the first block

    def check(mem_cfg: Any, path: Path) -> None:
        if path not in sizes:
            info = probe(str(path))
            sizes[path] = snap_frame_size(info.height, info.width, config.ingest.frame_size)
        d = backbone.dims
        kind, on_device = index_placement(mem_cfg.index, backbone.device)
        entry = d.num_layers * (d.kv_heads * d.head_dim * 4 + (FaissIndex.ENTRY_OVERHEAD if kind == "faiss" else 0))
        plan_device(mem_cfg, d.bytes_per_token, vision_tokens(sizes[path]), prefix, backbone.name,
                    IndexCost(entry, on_device))

    return check


def fidelity_factory(backbone: Any, config: Any) -> Callable[[], FidelityProbe]:
    """eval.fidelity.make_probe(backbone, config), or FidelityUnavailable saying what is missing."""
    try:
        from longwatch.eval import fidelity  # noqa: PLC0415 - optional, written by the memory work
    except ImportError as e:
        raise FidelityUnavailable(f"--fidelity: eval/fidelity.py is not available ({e})") from None
    make = getattr(fidelity, "make_probe", None)
    if make is None:
        raise FidelityUnavailable("--fidelity: eval/fidelity.py has no make_probe(backbone, config)")
    return lambda: make(backbone, config)
