"""After `longwatch train`: the training-curve PNG, the run JSON and the compact shipped checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def finish(record: dict[str, Any], out: Path, results: Path) -> None:
    from longwatch.eval.train_export import export_compact

    results.mkdir(parents=True, exist_ok=True)
    compact = export_compact(Path(record["state"]), out / "needle-tiny.safetensors")
    record["compact_checkpoint"] = str(compact)
    record["installed"] = str(install(compact))
    plot_curve(record, results / "train_curve.png")
    write_record(record, results / "train_run.json")


def install(compact: Path) -> Path:
    """Copy the exported file to where `--model needle-tiny` finds it when the package ships none."""
    import os
    import shutil

    from longwatch.backbone.shipped import trained_file

    target = trained_file("needle-tiny")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    shutil.copyfile(compact, tmp)
    os.replace(tmp, target)
    return target


def plot_curve(record: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = record["history"]
    steps = [h["step"] for h in hist]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(steps, [h["loss"] for h in hist])
    a.set(xlabel="step", ylabel="training loss (mean since last point)", yscale="log")
    kinds = sorted({k for h in hist for k in h["heldout"]})
    for k in kinds:
        b.plot(steps, [h["heldout"].get(k, float("nan")) for h in hist], label=k, lw=2.5 if k == "all" else 1)
    b.set(xlabel="step", ylabel="held-out exact (teacher-forced)", ylim=(0, 1))
    b.legend(fontsize=7, ncol=2)
    fig.suptitle(f"needle-tiny, seed {record['config']['seed']}, {record['wall_s'] / 60:.0f} min")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_record(record: dict[str, Any], path: Path) -> None:
    from longwatch.eval.environment import provenance

    path.write_text(json.dumps({**provenance(), **record}, indent=1, default=str))
