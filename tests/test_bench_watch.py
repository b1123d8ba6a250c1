"""bench watch: its cases, its outcome labels and its P(Yes) breakdown follow the plans it streams."""

from __future__ import annotations

from longwatch.eval.bench_watch import SHOWN, cases, first_seen, p_yes_by_shown, result_name, what_is_shown
from longwatch.eval.train_data import patch_frame_times


def test_each_plan_is_streamed_with_its_shape_and_without_it():
    todo = cases(3, 1)
    assert len(todo) == 6
    for (plan, cond, t), (without, cond2, none) in zip(todo[::2], todo[1::2]):
        color, shape = cond.removeprefix("Is a ").removesuffix(" on screen?").split()
        assert cond == cond2 and none is None and t == first_seen(plan, color, shape)
        labels = what_is_shown(plan, cond)
        first = next(k for k, lab in enumerate(labels) if lab == SHOWN[0])
        pairs = patch_frame_times(plan)
        assert pairs[first][1] >= t and (first == 0 or pairs[first - 1][1] < t)  # its first frame after t
        assert SHOWN[0] not in what_is_shown(without, cond)
        assert set(labels) <= set(SHOWN)


def test_p_yes_is_broken_down_by_what_the_newest_patch_shows():
    plan, cond, _ = cases(1, 1)[0]
    labels = what_is_shown(plan, cond)
    # a model that says Yes exactly on the shape asked: mean 1 there, 0 everywhere else
    row = {"condition": cond, "scores": [(k + 1.0, 1.0 if lab == SHOWN[0] else 0.0) for k, lab in enumerate(labels)]}
    by = p_yes_by_shown([row], [plan])
    assert by[SHOWN[0]] == {"checks": labels.count(SHOWN[0]), "mean_p_yes": 1.0, "share_over_0.5": 1.0}
    assert all(v["mean_p_yes"] == 0 for k, v in by.items() if k != SHOWN[0])
    assert sum(v["checks"] for v in by.values()) == len(labels)


def test_a_second_held_out_seed_gets_its_own_result_file():
    """Seed 2 used to be saved as watch_needle-tiny_20.json too, over seed 1's figures."""
    assert result_name("needle-tiny", 20, 1) == "watch_needle-tiny_20"
    assert result_name("needle-tiny", 20, 2) == "watch_needle-tiny_20_seed2"
    assert result_name("runs/train/x/needle-tiny.safetensors", 20, 3) == "watch_needle-tiny.safetensors_20_seed3"
