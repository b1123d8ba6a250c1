"""longwatch train: the loss sees only answer tokens, queries never see each other, training resumes exactly."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from longwatch.backbone.inputs import PromptLayout
from longwatch.backbone.tokenizer import load_offline_tokenizer
from longwatch.eval.needlestream import PRESETS, plan_video
from longwatch.eval.train import FULL_VOCAB, ShapeHead, TrainConfig, Vocab, build_model, cell_labels, collect_vocab, \
    encode, reduced_logits, shape_labels, train, training_example
from longwatch.eval.train_data import build_example, caption, clip_example, glimpse_example, patch_frame_times, \
    sample_times, shape_glimpse_example, shapes_in, watch_example


REPRODUCTION = Path(__file__).resolve().parents[1] / "eval" / "results" / "needle_tiny_train" / "repro8k_s0_run.json"


@pytest.fixture(scope="module")
def setup():
    tok = load_offline_tokenizer()
    layout = PromptLayout(tok)
    return tok, layout, collect_vocab(tok, layout, seed=0, n=40)


def test_train_and_heldout_splits_never_share_a_video():
    p = PRESETS["tiny"]
    train_plans = {(pl.duration_s, tuple(n.t0 for n in pl.needles)) for pl in
                   (plan_video(p, 0, i, split="train") for i in range(50))}
    held = {(pl.duration_s, tuple(n.t0 for n in pl.needles)) for pl in
            (plan_video(p, 0, i, split="heldout") for i in range(50))}
    assert not train_plans & held
    with pytest.raises(ValueError, match="no training split"):
        plan_video(PRESETS["smoke"], 0, 0, split="train")


def test_patch_times_match_the_2fps_ingest():
    assert sample_times(3.0, 8)[:6] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    ex = build_example("tiny", 0, 0, "train", np.random.default_rng(0))
    assert ex.times[3] == (3.0, 3.25)  # timestamp text <3.2 seconds>, as the stream writes it
    assert {q.kind for q in ex.queries} >= {"what_at", "when", "count", "now", "first", "order", "no_needle",
                                             "caption", "caption_now", "yesno_now"}


def test_queries_see_only_their_visible_patches_and_not_each_other(setup):
    tok, layout, vocab = setup
    ex = build_example("tiny", 0, 1, "train", np.random.default_rng(0))
    ex.frames = ex.frames[:, :, :64, :64]  # smaller forward, same structure
    b = encode(ex, layout, vocab)
    mask = b.inputs["attention_mask"][0, 0]
    assert mask.shape[0] == b.inputs["input_ids"].shape[1]
    at = b.at.tolist()
    firsts = [at[i] for i in range(len(at)) if i == 0 or b.query_of[i] != b.query_of[i - 1]]
    for i, row in enumerate(firsts[1:], 1):  # a query's first answer position sees no earlier query
        prev = firsts[i - 1]
        assert not mask[row, prev]
    # the loss covers answer tokens only: one target per answer token (+ <|im_end|>)
    n_answer = sum(len(tok.encode(q.answer, add_special_tokens=False)) + 1 for q in ex.queries)
    assert len(b.targets) == n_answer


def test_reduced_softmax_equals_the_full_vocabulary_model(setup):
    tok, layout, vocab = setup
    model = build_model(TrainConfig(), vocab, tok)
    ex = build_example("tiny-single", 0, 0, "train", np.random.default_rng(0))
    b = encode(ex, layout, vocab)
    with torch.no_grad():
        small = torch.log_softmax(reduced_logits(model, b, vocab), -1)[:, :-1]
        hidden = model.model(**b.inputs).last_hidden_state[0, b.at]
        w = model.get_input_embeddings().weight[: vocab.size]
        full = torch.cat([hidden @ w.T, torch.zeros(len(hidden), FULL_VOCAB - vocab.size)], 1)
    assert torch.allclose(small, torch.log_softmax(full, -1)[:, : vocab.size], atol=1e-3)  # float32 sums
    assert math.isclose(float(model.get_input_embeddings().weight[vocab.size].abs().sum()), 0.0)


def test_training_resumes_from_its_checkpoint_exactly(tmp_path):
    cfg = TrainConfig(steps=4, warmup=1, heldout_videos=1, eval_every=2, checkpoint_minutes=60)
    whole = train(cfg, tmp_path / "a", progress=False)
    part = train(cfg, tmp_path / "b", progress=False, stop_after=2)
    assert part["steps"] == 2
    resumed = train(cfg, tmp_path / "b", progress=False)
    assert resumed["steps"] == whole["steps"] == 4
    a = torch.load(tmp_path / "a" / "state.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "b" / "state.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="other settings"):
        train(TrainConfig(steps=5, heldout_videos=1), tmp_path / "b", progress=False)
    with pytest.raises(ValueError, match="already at step 4"):
        train(dataclasses.replace(cfg, steps=3), tmp_path / "b", progress=False)
    longer = train(dataclasses.replace(cfg, steps=6), tmp_path / "b", progress=False, stop_after=1)
    assert longer["steps"] == 5 and any("extended from 4 to 6 steps at step 4" in n for n in longer["notes"])


def test_a_run_with_the_shape_read_out_and_watch_steps_resumes_exactly(tmp_path):
    """The read-out head and its optimizer state are checkpointed with the model (a resumed run equals an
    uninterrupted one), and the watch steps and their held-out kinds are in it."""
    cfg = TrainConfig(steps=2, warmup=1, heldout_videos=1, eval_every=2, checkpoint_minutes=60, glimpses=4,
                      glimpse_steps=0, glimpse_share=0.0, clip_share=0.0, watch_share=1.0, shape_aux=1.0)
    whole = train(cfg, tmp_path / "a", progress=False)
    train(cfg, tmp_path / "b", progress=False, stop_after=1)
    train(cfg, tmp_path / "b", progress=False)
    a, b = (torch.load(tmp_path / d / "state.pt", weights_only=False) for d in "ab")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["aux"][k], b["aux"][k]) for k in a["aux"])
    assert {"watch_yesno", "shape_yesno"} <= set(whole["history"][-1]["heldout"])


def test_vocab_maps_unknown_tokens_to_the_zero_row():
    v = Vocab([5, 3, 9])
    assert v.rows(torch.tensor([3, 5, 9, 7])).tolist() == [0, 1, 2, 3]


def test_a_glimpse_is_answered_from_its_own_patch_only(setup):
    """Glimpses pack patches of different videos: changing one patch's pixels changes its own answers and
    no other glimpse's (a first version let later patches attend to earlier ones, and nothing was learnt)."""
    tok, layout, vocab = setup
    model = build_model(TrainConfig(), vocab, tok).eval()
    ex = glimpse_example(0, 0, np.random.default_rng(0), k=4)
    b = encode(ex, layout, vocab)
    per_patch = len(b.inputs["pixel_values_videos"]) // 4
    other = dict(b.inputs, pixel_values_videos=b.inputs["pixel_values_videos"].clone())
    other["pixel_values_videos"][per_patch:2 * per_patch] = torch.randn(per_patch, other["pixel_values_videos"].shape[1])
    with torch.no_grad():
        d = (reduced_logits(model, b, vocab) - reduced_logits(model, type(b)(other, b.targets, b.at, b.query_of),
                                                            vocab)).abs().amax(-1)
    changed = {int(q) for q in b.query_of[d > 1e-5]}
    assert changed == {2, 3}  # queries 2 and 3 (caption and yes/no) belong to glimpse 1
    assert [q.first for q in ex.queries] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_curriculum_glimpses_first_then_clips_and_whole_videos():
    cfg = TrainConfig(glimpse_steps=5)
    assert all(training_example(cfg, s).isolated for s in range(5))
    later = [training_example(cfg, s) for s in range(5, 45)]
    sizes = {("glimpse" if e.isolated else "clip" if e.queries[0].kind.startswith("clip") else "video")
             for e in later}
    assert sizes == {"glimpse", "clip", "video"}
    clip = clip_example(0, 3, np.random.default_rng(1))
    starts = [t0 for t0, _ in clip.times]
    assert 3 <= len(starts) <= 10 and all(b - a == 1.0 for a, b in zip(starts, starts[1:]))
    with pytest.raises(ValueError, match="clip_share"):
        TrainConfig(glimpse_share=0.6, clip_share=0.6)


def test_watch_questions_are_about_the_newest_patch_only():
    """Watch clips: after each patch, Yes exactly for what that patch shows (from the plan's needles, not the
    caption text the questions were built from), No for near misses and for shapes shown earlier and gone."""
    rng = np.random.default_rng(5)
    gone = swapped = 0
    for step in range(30):
        ex = watch_example(0, step, rng)
        pairs = [p for p in patch_frame_times(ex.plan) if any(p[0] == t0 for t0, _ in ex.times)]
        assert len(pairs) == len(ex.times) and 3 <= len(ex.times) <= 10
        for q in ex.queries:
            assert q.kind == "watch_yesno" and 1 <= q.cut <= len(ex.times) and q.answer in ("Yes", "No")
            what = q.prompt.split("\n")[0].removeprefix("Is ").removesuffix(" on screen?").removeprefix("there ")
            newest = caption(ex.plan, pairs[q.cut - 1])
            assert (q.answer == "Yes") == (f"{what}," in newest or newest.endswith(what) or f"{what} and" in newest)
            earlier = " ".join(caption(ex.plan, p) for p in pairs[:q.cut - 1])
            gone += q.answer == "No" and f"{what}," in earlier
        for k, pair in enumerate(pairs):  # two shapes in one patch: each colour with the other's shape, No
            now = shapes_in(caption(ex.plan, pair))
            swaps = {(a[0], b[1]) for a, b in itertools.permutations(now, 2)} - set(now)
            asked = {tuple(q.prompt.split(" on screen?")[0].split()[2:]) for q in ex.queries if q.cut == k + 1
                     and q.answer == "No"}
            assert swaps <= asked
            swapped += len(swaps)
    assert swapped > 0
    with pytest.raises(ValueError, match="watch_share"):
        TrainConfig(glimpse_share=0.5, clip_share=0.3, watch_share=0.3)
    with pytest.raises(ValueError, match="shape_aux"):
        TrainConfig(shape_aux=-1)


def test_the_shape_read_out_trains_the_vision_tower_on_shape_patches_only(setup):
    """The auxiliary shape loss sees only patches with one coloured shape, labelled from the plan, and its
    gradient reaches the vision tower (not the language model)."""
    tok, layout, vocab = setup
    ex = shape_glimpse_example(0, 0, np.random.default_rng(3), k=4)
    labels = shape_labels(ex)
    assert labels == [["circle", "square", "triangle"].index(q.answer.split(",")[0].split()[-1])
                      for q in ex.queries if q.kind == "glimpse_caption"]
    video = build_example("tiny", 0, 2, "train", np.random.default_rng(0))
    assert {lab is None for lab in shape_labels(video)} == {True, False}
    model = build_model(TrainConfig(), vocab, tok)
    aux = ShapeHead(model, 1.0)
    b = encode(ex, layout, vocab)
    model.model(**b.inputs)
    loss = aux.loss(labels)
    assert loss.item() > 0
    loss.backward()
    assert model.model.visual.merger.linear_fc2.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.model.language_model.parameters())
    assert ShapeHead(model, 0.0).loss(labels).item() == 0


def test_the_cell_read_out_names_the_grid_cell_of_the_same_patches(setup):
    """--cell-aux: labels are the plan's cell of exactly the patches the shape read-out labels, it adds its
    own loss with its own head, and it is refused without the shape read-out."""
    from longwatch.eval.needlestream import CELLS

    tok, layout, vocab = setup
    ex = shape_glimpse_example(0, 0, np.random.default_rng(3), k=4)
    cells = cell_labels(ex)
    assert cells == [CELLS.index(q.answer.split(", ", 1)[1]) for q in ex.queries if q.kind == "glimpse_caption"]
    video = build_example("tiny", 0, 2, "train", np.random.default_rng(0))
    assert [c is None for c in cell_labels(video)] == [s is None for s in shape_labels(video)]
    model = build_model(TrainConfig(), vocab, tok)
    both, alone = ShapeHead(model, 1.0, cell_weight=1.0), ShapeHead(model, 1.0)
    alone.head.load_state_dict(both.head.state_dict())
    model.model(**encode(ex, layout, vocab).inputs)
    with_cell = both.loss(shape_labels(ex), cells)
    model.model(**encode(ex, layout, vocab).inputs)
    assert with_cell.item() > alone.loss(shape_labels(ex)).item() > 0
    assert "cell.weight" not in alone.state_dict()  # a state saved before --cell-aux still loads
    with pytest.raises(ValueError, match="cell_aux"):
        TrainConfig(shape_aux=0, cell_aux=1)


def test_a_fine_tune_starts_from_the_shipped_weights_exactly():
    """--init: the reduced model built from the compact file gives, on the trained rows, the logits of the
    full-vocabulary checkpoint the loader builds from the same file."""
    from longwatch.backbone.config import ModelConfig
    from longwatch.backbone.loading import load_model
    from longwatch.backbone.shipped import shipped_file
    from longwatch.eval.train import init_vocab

    path = shipped_file("needle-tiny")
    tok = load_offline_tokenizer()
    layout = PromptLayout(tok)
    vocab = init_vocab(path)
    cfg = TrainConfig(init=str(path))
    model = build_model(cfg, vocab, tok).eval()
    full = load_model(ModelConfig(name="needle-tiny", device="cpu", dtype="float32")).model
    ex = build_example("tiny", 5, 0, "heldout", np.random.default_rng(0))
    ex.queries = ex.queries[:3]
    batch = encode(ex, layout, vocab)
    with torch.no_grad():
        mine = reduced_logits(model, batch, vocab)[:, :-1]
        inputs = dict(batch.inputs, input_ids=vocab.ids[batch.inputs["input_ids"].clamp(max=vocab.size - 1)])
        theirs = full(**inputs).logits[0, batch.at][:, vocab.ids]
    assert (mine - theirs).abs().max().item() < 1e-3
    assert torch.equal(mine.argmax(-1), theirs.argmax(-1))


def test_a_trained_export_loads_by_its_path(tmp_path, monkeypatch):
    """The end of `longwatch train`: its compact file (exported, installed) is a model `--model PATH` loads, with the
    trained weights (fp16, as shipped)."""
    from longwatch.backbone.config import ModelConfig
    from longwatch.backbone.loading import load_model
    from longwatch.eval.train_report import finish

    monkeypatch.setenv("LONGWATCH_CACHE", str(tmp_path / "cache"))
    cfg = TrainConfig(steps=2, warmup=1, heldout_videos=1, eval_every=2, checkpoint_minutes=60, glimpse_steps=1)
    record = train(cfg, tmp_path / "run", progress=False)
    finish(record, tmp_path / "run", tmp_path / "results")
    compact = tmp_path / "run" / "needle-tiny.safetensors"
    assert record["compact_checkpoint"] == str(compact) and (tmp_path / "results" / "train_curve.png").is_file()
    loaded = load_model(ModelConfig(name=str(compact), device="cpu", dtype="float32")).model.state_dict()
    trained = torch.load(tmp_path / "run" / "state.pt", weights_only=False)["model"]
    key = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(loaded[key], trained[key].to(torch.float16).float())


def test_time_drills_are_text_lookups_inside_the_shipped_vocabulary():
    """--drill-share: each drill sees no patch, its notes carry the stream's own timestamps, its answer is the
    note of the second the question names (seconds or mm:ss), and it tokenises inside the shipped checkpoint's
    vocabulary (a fine-tune keeps that vocabulary); off by default."""
    import re

    from longwatch.backbone.shipped import shipped_file
    from longwatch.eval.train import init_vocab
    from longwatch.eval.train_data import drill_example

    tok = load_offline_tokenizer()
    layout = PromptLayout(tok)
    known = set(init_vocab(shipped_file("needle-tiny")).ids.tolist())
    rng = np.random.default_rng(3)
    clocks = 0
    for step in range(10):
        ex = drill_example(0, step, rng, k=8)
        drills = [q for q in ex.queries if q.kind == "drill"]
        assert len(drills) == 8 and {q.kind for q in ex.queries} - {"drill"}  # the clip's own questions too
        for q in drills:
            assert q.cut == 0 and q.context and q.answer in [text for _, text in q.context]
            asked = re.search(r"at (?:(\d+)\.\d seconds|(\d\d):(\d\d))\?$", q.prompt)
            second = int(asked[1]) if asked[1] else 60 * int(asked[2]) + int(asked[3])
            clocks += asked[1] is None
            assert [text for t, text in q.context if int(t) == second] == [q.answer]
            assert all(f"<{t:.1f} seconds> {text}" in q.prompt for t, text in q.context)
            ids = tok.encode(layout.before_question + q.prompt + layout.after_question + q.answer,
                             add_special_tokens=False)
            assert set(ids) <= known
    assert 0 < clocks < 80
    assert TrainConfig().drill_share == 0
    with pytest.raises(ValueError, match="drill_share"):
        TrainConfig(glimpse_share=0.5, clip_share=0.3, drill_share=0.3)


def test_the_defaults_are_the_measured_reproduction_run():
    """README's reproduction command is `longwatch train --preset needle-tiny --seed 0` with no other flag:
    its defaults must be the recipe whose run record (command, wall time, held-out accuracy) is committed."""
    record = json.loads(REPRODUCTION.read_text())
    assert record["command"].split() == ["longwatch", "train", "--preset", "needle-tiny", "--seed", "0"]
    defaults = dataclasses.asdict(TrainConfig())
    assert {k: defaults[k] for k in record["config"]} == record["config"]
    assert all(not defaults[k] for k in defaults.keys() - record["config"].keys())  # added since: off
