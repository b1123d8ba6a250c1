"""`longwatch train`: teach a small Qwen3-VL (needle-tiny) to answer NeedleStream questions, on the CPU.

The model is the real `Qwen3VLForConditionalGeneration` with a reduced vocabulary: only the Qwen3
tokens the training texts use get an embedding row. Every other row of the full 151,936-token
embedding is zero in the shipped model, so its logit is exactly 0; the training loss counts those
rows as one constant log(V - U) term in the softmax, which makes the rebuilt full-vocabulary model's
probabilities those trained here. Inputs go in exactly as the streaming path lays them out (prompt
prefix, `<t seconds>` + vision group per patch, explicit M-RoPE positions, mm_token_type_ids); all
queries of a video share one forward and see only the patches visible when they are asked.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from longwatch.backbone.inputs import TEXT, PromptLayout, mrope_positions, preprocess_patch
from longwatch.eval.train_data import (Example, Query, build_example, clip_example, drill_example, glimpse_example,
                                      shape_glimpse_example, single_shape, watch_example)
from longwatch.eval.needlestream import CELLS, SHAPES

FULL_VOCAB = 151936
SPECIAL = ("<|vision_start|>", "<|vision_end|>", "<|video_pad|>", "<|image_pad|>", "<|im_start|>", "<|im_end|>",
           "<|endoftext|>")
TOKEN_FIELDS = {"image_token_id": "<|image_pad|>", "video_token_id": "<|video_pad|>",
                "vision_start_token_id": "<|vision_start|>", "vision_end_token_id": "<|vision_end|>"}


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "needle-tiny"
    """Architecture (backbone/presets.py) of the model trained."""
    seed: int = 0
    """Seeds the weights, the data order and the training videos (split 'train' of NeedleStream v2)."""
    steps: int = 8000
    """Optimizer steps; one video with all its queries per step. The defaults are the one-run recipe that
    reproduces the shipped checkpoint in under 90 minutes on two cores (README, needle-tiny); checkpoint v1
    was `steps=3600, glimpse_share=0.2, clip_share=0.3, watch_share=0, shape_aux=0`."""
    lr: float = 1.5e-3
    """Peak learning rate (AdamW), after `warmup` steps; cosine decay to a tenth at the end."""
    warmup: int = 100
    weight_decay: float = 0.01
    single_share: float = 0.2
    """Share of steps on the one-sign preset (the time-free floor question)."""
    heldout_videos: int = 24
    """Held-out videos (split 'heldout', seed 10_000 + seed) scored teacher-forced during training."""
    eval_every: int = 300
    checkpoint_minutes: float = 3.0
    threads: int = 2
    vision_rms: float = 0.1
    """Vision outputs above this per-element RMS are penalised (text embeddings sit near 0.07)."""
    vision_scale_weight: float = 1.0
    glimpse_steps: int = 600
    """Curriculum, phase 1: the first steps train on glimpses only (single patches of many videos, each
    seen alone): a run that started on whole videos never learned to use the pixels (runs 1-3)."""
    glimpses: int = 16
    """Patches per glimpse step."""
    glimpse_share: float = 0.15
    clip_share: float = 0.25
    """After phase 1, the share of steps on glimpses and on short clips (3-10 consecutive patches asked
    about by time); the rest are whole videos with every question."""
    shape_aux: float = 1.0
    """Weight of the training-only shape read-out loss on the vision merger (`ShapeHead`); 0 = none."""
    cell_aux: float = 0.0
    """Weight of a second read-out on the same tokens that must name the 3x3 grid cell of those patches: the
    model answers past shapes' cells from a prior (README, needle-tiny), so the tower is made to put the
    position into the token's content; needs shape_aux > 0; 0 = none."""
    vision_lr_mult: float = 1.0
    """The vision tower's learning rate relative to `lr`."""
    watch_share: float = 0.25
    """Share of steps on watch clips (yes/no about the newest patch after every patch, with near misses and
    shapes gone by: `train_data.watch_example`); 0 leaves the curriculum as it was."""
    drill_share: float = 0.0
    """Share of steps on time drills (a clip and 16 text-only lookups by time in timed notes:
    `train_data.drill_example`); 0 leaves the curriculum as it was."""
    init: str = ""
    """A compact checkpoint (backbone/shipped.py format) to start from instead of random weights: a
    fine-tune. Its vocabulary is kept (every training text must tokenise inside it)."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.warmup < 0 or self.lr <= 0:
            raise ValueError("steps must be >= 1, warmup >= 0 and lr > 0")
        for name in ("single_share", "glimpse_share", "clip_share", "watch_share", "drill_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name}: must be in [0, 1], got {getattr(self, name)}")
        if self.shape_aux < 0 or not self.vision_lr_mult > 0:
            raise ValueError("shape_aux must be >= 0 and vision_lr_mult > 0")
        if self.cell_aux < 0 or (self.cell_aux and not self.shape_aux):
            raise ValueError("cell_aux must be >= 0, and needs shape_aux > 0 (it reads the same tokens)")
        if self.glimpse_share + self.clip_share + self.watch_share + self.drill_share > 1:
            raise ValueError("glimpse_share + clip_share + watch_share + drill_share must be at most 1")


class Vocab:
    """Qwen3 token id <-> row of the reduced embedding. Row U (the last) is the frozen zero row that every
    token outside the training texts maps to, as it would in the full model."""

    def __init__(self, token_ids: list[int]) -> None:
        self.ids = torch.tensor(sorted(set(token_ids)), dtype=torch.long)
        self.size = len(self.ids)
        self.table = torch.full((FULL_VOCAB,), self.size, dtype=torch.long)
        self.table[self.ids] = torch.arange(self.size)

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table[ids]


def collect_vocab(tokenizer: Any, layout: PromptLayout, seed: int, n: int = 300) -> Vocab:
    """Every token of the prompts and answers of `n` training examples of each preset, the timestamps of a
    day, the digits and the special tokens."""
    ids: set[int] = set(tokenizer.convert_tokens_to_ids(list(SPECIAL)))
    rng = np.random.default_rng(seed)
    enc = lambda s: tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
    for s in (layout.prefix_text, layout.before_question, layout.after_question, *"0123456789",
              *(f"<{t}.2 seconds>" for t in range(0, 100))):
        ids.update(enc(s))
    for i in range(n):
        for preset in ("tiny", "tiny-single"):
            ex = build_example(preset, 50_000 + seed, i, "train", rng, render=False)
            for q in ex.queries:
                ids.update(enc(layout.before_question + q.prompt + layout.after_question))
                ids.update(enc(q.answer))
    return Vocab(sorted(ids))


@dataclass
class Batch:
    inputs: dict[str, torch.Tensor]
    targets: torch.Tensor
    """[A] reduced-vocab rows of the answer tokens."""
    at: torch.Tensor
    """[A] sequence index whose hidden state predicts each target."""
    query_of: torch.Tensor
    """[A] which query each target belongs to."""
    kinds: list[str] = field(default_factory=list)


def encode(ex: Example, layout: PromptLayout, vocab: Vocab) -> Batch:
    """One sequence: [prefix][patches] then every query block; a [L, L] mask lets query i see the prefix and
    its first `cut` patches (text-only queries: nothing of the video) and itself, causally."""
    tok = layout.tokenizer
    size = tuple(ex.frames.shape[2:4])
    segs = [layout.prefix()]
    for frames, (t0, tmid) in zip(ex.frames, ex.times):
        px, grid = preprocess_patch(frames, size)
        segs.append(layout.patch(px, grid, t0, t0 + 1.0, tmid))
    ids, types, pos, ends, spans = [], [], [], [], []
    cur, n_tok = 0, 0
    for s in segs:
        ids.append(s.input_ids)
        types.append(s.token_types)
        pos.append(s.positions + cur)
        cur += s.span
        n_tok += len(s)
        ends.append(n_tok)
        spans.append(cur)
    blocks: list[tuple[int, int, int, int]] = []  # (start, end, first visible video token, visible video tokens)
    targets, at, query_of = [], [], []
    for qi, q in enumerate(ex.queries):
        prompt = tok.encode(layout.before_question + q.prompt + layout.after_question, add_special_tokens=False)
        answer = tok.encode(q.answer, add_special_tokens=False) + [layout.im_end]
        head = tok.encode(layout.prefix_text, add_special_tokens=False) if q.cut == 0 else []
        seq = torch.tensor(head + prompt + answer, dtype=torch.long)
        p0 = 0 if q.cut == 0 else spans[q.cut]
        visible = 0 if q.cut == 0 else ends[q.cut]
        start = n_tok
        ids.append(seq)
        types.append(torch.full_like(seq, TEXT, dtype=torch.int32))
        pos.append(mrope_positions(types[-1], [], 0)[0] + p0)
        n_tok += len(seq)
        blocks.append((start, n_tok, ends[q.first] if q.cut else 0, visible))
        first = start + len(head) + len(prompt)
        targets += answer
        at += list(range(first - 1, first - 1 + len(answer)))
        query_of += [qi] * len(answer)
    L = n_tok
    mask = torch.ones(L, L, dtype=torch.bool).tril_()
    if ex.isolated:
        for j in range(1, len(segs) - 1):
            mask[ends[j]:ends[j + 1], ends[0]:ends[j]] = False
    for start, end, first, visible in blocks:
        mask[start:end, visible:start] = False
        mask[start:end, ends[0]:first] = False
    all_ids = torch.cat(ids)
    inputs = {"input_ids": vocab.rows(all_ids)[None], "mm_token_type_ids": torch.cat(types)[None],
              "position_ids": torch.cat(pos, dim=1)[:, None, :], "attention_mask": mask[None, None],
              "pixel_values_videos": torch.cat([s.pixel_values for s in segs[1:]]),
              "video_grid_thw": torch.tensor([s.grid_thw for s in segs[1:]], dtype=torch.long)}
    tgt = vocab.rows(torch.tensor(targets))
    if (tgt == vocab.size).any():
        bad = [tok.decode([t]) for t, r in zip(targets, tgt.tolist()) if r == vocab.size]
        raise ValueError(f"answer tokens outside the training vocabulary: {bad[:5]}")
    return Batch(inputs, tgt, torch.tensor(at), torch.tensor(query_of), [q.kind for q in ex.queries])


def reduced_logits(model: torch.nn.Module, batch: Batch, vocab: Vocab) -> torch.Tensor:
    """[A, U + 1] logits of the answer positions: the U trained rows, then log(V - U) standing for the
    V - U zero rows (each logit 0) of the full model."""
    hidden = model.model(**batch.inputs).last_hidden_state[0, batch.at]
    weight = model.get_input_embeddings().weight[: vocab.size]
    logits = hidden @ weight.T
    rest = torch.full((len(logits), 1), math.log(FULL_VOCAB - vocab.size), dtype=logits.dtype)
    return torch.cat([logits, rest], dim=1)


def query_correct(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """[Q] True where every answer token of the query is the argmax (teacher-forced exact answer).

    The argmax of the full model competes with one zero logit per untrained token, not with their summed
    mass (the last column of `reduced_logits`, which only the softmax needs)."""
    scores = torch.cat([logits[:, :-1], torch.zeros(len(logits), 1, dtype=logits.dtype)], dim=1)
    hit = (scores.argmax(-1) == batch.targets).float()
    n = int(batch.query_of.max()) + 1
    miss = torch.zeros(n).index_add_(0, batch.query_of, 1 - hit)
    return miss == 0


class VisionScale:
    """Training-only penalty that keeps the vision tower's outputs (the merger's and DeepStack's) at about the
    scale of the text embeddings. Without it a run let them grow to a norm of ~900 against ~1 for text:
    after the decoder's RMSNorm that scales every gradient into the vision tower by ~1/900 and freezes the
    residual stream at visual positions, and after 1,100 steps the model still answered from text priors
    only. Forward hooks (PyTorch's API) read the outputs; the architecture is untouched."""

    def __init__(self, model: torch.nn.Module, target_rms: float, weight: float) -> None:
        self.target, self.weight, self.outs = target_rms, weight, []
        visual = model.model.visual
        for mod in [visual.merger, *visual.deepstack_merger_list]:
            mod.register_forward_hook(lambda _m, _i, out: self.outs.append(out))

    def penalty(self) -> torch.Tensor:
        p = sum(((o.float().pow(2).mean(-1) - self.target ** 2).clamp(min=0)).mean() for o in self.outs)
        self.outs.clear()
        return self.weight * p


class ShapeHead(torch.nn.Module):
    """Training-only auxiliary loss: a linear read-out of the vision merger's tokens that must name the shape
    (circle, square, triangle) of every patch showing one coloured shape, from whichever of its tokens
    carries it (logsumexp over the patch's tokens). The answers alone taught the shipped model to read
    colour at 1.00 but shape at 0.55 (chance 0.33), and its merger features held less shape than a random
    tower's; this read-out (a forward hook, not part of the checkpoint) trains the tower to keep shape."""

    def __init__(self, model: torch.nn.Module, weight: float, cell_weight: float = 0.0) -> None:
        super().__init__()
        self.weight, self.cell_weight, self.out = weight, cell_weight, None
        width = model.model.visual.merger.linear_fc2.out_features
        self.head = torch.nn.Linear(width, len(SHAPES))
        if cell_weight:  # only then: a state saved without it still loads
            self.cell = torch.nn.Linear(width, len(CELLS))
        model.model.visual.merger.register_forward_hook(lambda _m, _i, out: setattr(self, "out", out))

    def loss(self, labels: list[int | None], cells: list[int | None] | None = None) -> torch.Tensor:
        out, self.out = self.out, None
        if not self.weight or out is None or not any(x is not None for x in labels):
            return torch.zeros(())
        per = out.reshape(len(labels), -1, out.shape[-1])
        keep = [i for i, x in enumerate(labels) if x is not None]
        feats = per[keep].float()
        logits = self.head(feats).logsumexp(1)
        total = self.weight * F.cross_entropy(logits, torch.tensor([labels[i] for i in keep]))
        if self.cell_weight and cells is not None:
            cell_logits = self.cell(feats).logsumexp(1)
            total = total + self.cell_weight * F.cross_entropy(cell_logits, torch.tensor([cells[i] for i in keep]))
        return total


def shape_labels(ex: Example) -> list[int | None]:
    """Per patch: the index in SHAPES of its one coloured shape, None for any other patch."""
    shown = [single_shape(cap) for cap in ex.captions]
    return [SHAPES.index(one[1]) if one else None for one in shown]


def cell_labels(ex: Example) -> list[int | None]:
    """Per patch: the index in CELLS of its one coloured shape's grid cell (the caption's words after the
    comma), None wherever shape_labels is None."""
    return [CELLS.index(cap.split(", ", 1)[1]) if single_shape(cap) else None for cap in ex.captions]


def build_model(cfg: TrainConfig, vocab: Vocab, tokenizer: Any) -> torch.nn.Module:
    from transformers import AutoModelForImageTextToText

    from longwatch.backbone.presets import preset_config

    special = {k: int(vocab.rows(torch.tensor(tokenizer.convert_tokens_to_ids(v)))) for k, v in TOKEN_FIELDS.items()}
    config = preset_config(cfg.preset, vocab_size=vocab.size + 1, token_ids=special)
    torch.manual_seed(cfg.seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32, attn_implementation="sdpa")
    if cfg.init:
        model.load_state_dict(init_state(Path(cfg.init), vocab, model), strict=True)
    zero_unused_row(model, vocab)
    return model


def init_vocab(path: Path) -> Vocab:
    """The vocabulary of a compact checkpoint (a fine-tune keeps it)."""
    from longwatch.backbone.shipped import IDS, read_compact

    return Vocab(read_compact(path)[0][IDS].tolist())


def init_state(path: Path, vocab: Vocab, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The reduced-vocabulary state dict of a compact checkpoint: its weights in float32, the embedding rows
    in `vocab` order plus the zero row (the tied LM head shares them)."""
    from longwatch.backbone.shipped import EMBED_KEY, IDS, ROWS, read_compact

    tensors, _ = read_compact(path)
    if not torch.equal(tensors[IDS], vocab.ids):
        raise ValueError(f"--init {path}: its vocabulary differs from this run's")
    state = {k: v.float() for k, v in tensors.items() if k not in (ROWS, IDS)}
    state[EMBED_KEY] = torch.cat([tensors[ROWS].float(), torch.zeros(1, tensors[ROWS].shape[1])])
    for k in model.state_dict():
        if k.startswith("lm_head.") and k not in state:
            state[k] = state[EMBED_KEY]
    return state


@torch.no_grad()
def zero_unused_row(model: torch.nn.Module, vocab: Vocab) -> None:
    model.get_input_embeddings().weight[vocab.size].zero_()


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def training_example(cfg: TrainConfig, step: int) -> Example:
    """The curriculum: glimpses only for `glimpse_steps`, then a mix of glimpses, clips and whole videos."""
    rng = np.random.default_rng([cfg.seed, step, 7])
    u = rng.random()
    if step < cfg.glimpse_steps or u < cfg.glimpse_share:
        return glimpse_example(cfg.seed, step, rng, k=cfg.glimpses)
    if u < cfg.glimpse_share + cfg.clip_share:
        return clip_example(cfg.seed, step, rng)
    if u < cfg.glimpse_share + cfg.clip_share + cfg.watch_share:  # half of them single shapes, half clips
        return shape_glimpse_example(cfg.seed, step, rng, k=cfg.glimpses) if rng.random() < 0.5 else \
            watch_example(cfg.seed, step, rng)
    if u < cfg.glimpse_share + cfg.clip_share + cfg.watch_share + cfg.drill_share:
        return drill_example(cfg.seed, step, rng, k=cfg.glimpses)
    preset = "tiny-single" if rng.random() < cfg.single_share else "tiny"
    return build_example(preset, cfg.seed, step, "train", rng)


def heldout_examples(cfg: TrainConfig) -> list[Example]:
    """Held-out split videos (never a training video: the split is part of their seed)."""
    rng = np.random.default_rng([cfg.seed, 99])
    n_single = max(1, cfg.heldout_videos // 6)
    videos = [build_example("tiny-single" if i < n_single else "tiny", 10_000 + cfg.seed, i, "heldout", rng)
              for i in range(cfg.heldout_videos)]
    n_short = max(1, cfg.heldout_videos // 6)
    out = (videos + [glimpse_example(10_000 + cfg.seed, i, rng, k=cfg.glimpses, split="heldout") for i in range(n_short)]
           + [clip_example(10_000 + cfg.seed, i, rng, split="heldout") for i in range(n_short)])
    if cfg.watch_share:  # only then, and drawn last: the earlier recipe's held-out set stays as it was
        out += [watch_example(10_000 + cfg.seed, i, rng, split="heldout") for i in range(2 * n_short)]
        out += [shape_glimpse_example(10_000 + cfg.seed, i, rng, k=cfg.glimpses, split="heldout")
                for i in range(n_short)]
    if cfg.drill_share:  # likewise
        out += [drill_example(10_000 + cfg.seed, i, rng, k=cfg.glimpses, split="heldout") for i in range(n_short)]
    return out


@torch.no_grad()
def heldout_accuracy(model: torch.nn.Module, batches: list[Batch], vocab: Vocab) -> dict[str, float]:
    model.eval()
    right: dict[str, list[bool]] = {}
    for b in batches:
        ok = query_correct(reduced_logits(model, b, vocab), b)
        for kind, v in zip(b.kinds, ok.tolist()):
            right.setdefault(kind, []).append(v)
    model.train()
    out = {k: float(np.mean(v)) for k, v in sorted(right.items())}
    out["all"] = float(np.mean([x for v in right.values() for x in v]))
    return out


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Atomic: a crash mid-write leaves the previous checkpoint in place."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(cfg: TrainConfig, out: Path, progress: bool = True, resume: bool = True,
          stop_after: int | None = None) -> dict[str, Any]:
    """Train, checkpointing to out/state.pt every few minutes; resumes from it. Returns the run record.

    `stop_after` N: checkpoint and return after N steps of this call, as an interrupt would (tests).
    """
    from tqdm import tqdm

    from longwatch.backbone.tokenizer import load_offline_tokenizer

    torch.set_num_threads(cfg.threads)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = load_offline_tokenizer()
    layout = PromptLayout(tokenizer)
    state_path = out / "state.pt"
    state = torch.load(state_path, weights_only=False) if resume and state_path.is_file() else None
    # threads only change speed; a larger `steps` extends a run (the cosine schedule is recomputed for the new
    # length, a warm restart recorded in the run's notes)
    same = lambda a: {k: v for k, v in a.items() if k not in ("threads", "steps")}  # noqa: E731
    if state is not None and same(state["config"]) != same(cfg.__dict__):
        raise ValueError(f"{state_path} was written with other settings {state['config']}; use another --out "
                         "or --fresh")
    if state is not None and cfg.steps < state["step"]:
        raise ValueError(f"--steps {cfg.steps}: {state_path} is already at step {state['step']}; ask for more "
                         "steps to extend the run, or use --fresh")
    if state:
        vocab = Vocab(state["vocab"])
    else:
        vocab = init_vocab(Path(cfg.init)) if cfg.init else collect_vocab(tokenizer, layout, cfg.seed)
    model = build_model(cfg, vocab, tokenizer)
    visual = [p for n, p in model.named_parameters() if n.startswith("model.visual.")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("model.visual.")]
    opt = torch.optim.AdamW([{"params": rest, "mult": 1.0}, {"params": visual, "mult": cfg.vision_lr_mult}],
                            lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    aux = ShapeHead(model, cfg.shape_aux, cfg.cell_aux) if cfg.shape_aux else None  # none at 0: that run draws no extra weights
    if aux is not None:
        opt.add_param_group({"params": list(aux.parameters()), "mult": 1.0, "weight_decay": 0.0})
    history: list[dict[str, Any]] = []
    notes: list[str] = list(state.get("notes", [])) if state else []
    start, wall = 0, 0.0
    if state:
        model.load_state_dict(state["model"])
        if aux is not None:
            aux.load_state_dict(state["aux"])
        opt.load_state_dict(state["optimizer"])
        start, wall, history = state["step"], state["wall_s"], state["history"]
        if cfg.steps != state["config"]["steps"]:
            notes.append(f"extended from {state['config']['steps']} to {cfg.steps} steps at step {start} "
                         "(cosine schedule recomputed for the new length: a warm restart)")
    scale = VisionScale(model, cfg.vision_rms, cfg.vision_scale_weight)
    model.train()
    held = [encode(ex, layout, vocab) for ex in heldout_examples(cfg)]
    last_ckpt, t_mark, losses = time.monotonic(), time.monotonic(), []

    def snapshot(step: int) -> None:
        save_state(state_path, {"config": cfg.__dict__, "vocab": vocab.ids.tolist(), "model": model.state_dict(),
                                "optimizer": opt.state_dict(), "aux": aux.state_dict() if aux else None, "step": step,
                                "history": history,
                                "wall_s": wall + time.monotonic() - t_mark, "notes": notes})

    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train", disable=not progress)
    acc = history[-1]["heldout"]["all"] if history else float("nan")
    for step in bar:
        example = training_example(cfg, step)
        batch = encode(example, layout, vocab)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg) * g["mult"]
        loss = F.cross_entropy(reduced_logits(model, batch, vocab), batch.targets)
        opt.zero_grad(set_to_none=True)
        shape_loss = aux.loss(shape_labels(example), cell_labels(example) if cfg.cell_aux else None) \
            if aux is not None else torch.zeros(())
        (loss + scale.penalty() + shape_loss).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        zero_unused_row(model, vocab)
        last = loss.item()
        losses.append(last)
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            heldout = heldout_accuracy(model, held, vocab)
            scale.outs.clear()
            if aux is not None:
                aux.out = None
            acc = heldout["all"]
            history.append({"step": step + 1, "loss": float(np.mean(losses)), "heldout": heldout,
                            "wall_s": round(wall + time.monotonic() - t_mark, 1)})
            losses = []
        bar.set_postfix(loss=f"{last:.3f}", heldout=f"{acc:.2f}",
                        **({"shape": f"{shape_loss.item():.2f}"} if cfg.shape_aux else {}))
        stop = stop_after is not None and step + 1 - start >= stop_after
        if time.monotonic() - last_ckpt > 60 * cfg.checkpoint_minutes or step + 1 == cfg.steps or stop:
            snapshot(step + 1)
            last_ckpt = time.monotonic()
        if stop:
            break
    final = torch.load(state_path, weights_only=False)
    return {"config": cfg.__dict__, "steps": final["step"], "wall_s": round(final["wall_s"], 1),
            "vocab_size": vocab.size, "history": final["history"], "notes": final.get("notes", []),
            "state": str(state_path)}
