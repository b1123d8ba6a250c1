"""Turn a training checkpoint (runs/train/.../state.pt) into the compact shipped file (backbone/shipped.py)."""

from __future__ import annotations

from pathlib import Path

import torch

from longwatch.backbone.shipped import write_compact


def export_compact(state_path: Path, out: Path) -> Path:
    """Write `out` from the training state at `state_path` (its weights, vocabulary and run summary)."""
    state = torch.load(state_path, weights_only=False, map_location="cpu")
    hist = state["history"]
    meta = {"steps": state["step"], "seed": state["config"]["seed"], "wall_s": round(state["wall_s"], 1),
            "heldout_teacher_forced": hist[-1]["heldout"] if hist else {}}
    return write_compact(state["model"], torch.tensor(state["vocab"]), state["config"]["preset"], out, meta)
