"""`report.md` of a run directory, with PNG plots: curves, per-class accuracy, confusion.

Reads only what the run wrote (`metrics.jsonl`, `per_class_accuracy.csv`,
`predictions.parquet`), so it can be rebuilt at any time for any run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from storyboard_common.files import atomic_savefig, atomic_write_text
from storyboard_common.plots import pyplot

from .metrics import confusion_matrix


def _curves(log: list[dict], path: Path) -> None:
    plt = pyplot()
    train = [x for x in log if "train_loss" in x]
    evals = [x for x in log if "top1" in x]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    axes[0].plot([x["epoch"] for x in train], [x["train_loss"] for x in train], marker="o")
    axes[0].set(xlabel="epoch", ylabel="training loss", title="loss")
    key = "map" if evals and evals[-1].get("map") is not None else "top1"
    axes[1].plot([x["epoch"] for x in evals], [x[key] for x in evals], marker="o", color="C1")
    axes[1].set(xlabel="epoch", ylabel=key, title=f"test {key}", ylim=(0, 1))
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


def _per_class(frame: pd.DataFrame, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(4, 0.25 * len(frame)), 3.2))
    ax.bar(range(len(frame)), frame["top1"].fillna(0))
    ax.set_xticks(range(len(frame)), frame["class_name"], rotation=90, fontsize=7)
    ax.set(ylabel="top-1", ylim=(0, 1), title="per-class accuracy")
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


def _confusion(matrix: np.ndarray, names: list[str], path: Path) -> None:
    plt = pyplot()
    size = max(4, 0.22 * len(names))
    fig, ax = plt.subplots(figsize=(size + 1, size))
    rows = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)  # share of each true class
    image = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title="confusion (row-normalised)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


def read_metrics(run_dir: Path) -> list[dict]:
    """The lines of a run's `metrics.jsonl` as dicts ([] before its first epoch)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_report(run_dir: Path) -> Path:
    """Write `report.md` and its PNGs into `run_dir`; returns the report's path."""
    run_dir = Path(run_dir)
    log = read_metrics(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    lines = [f"# Run `{run_dir.name}`", ""]
    lines += [
        f"- dataset `{config['dataset']}`, split `{config['split']}`, shots "
        f"`{config['shots']}`, aggregation `{config['aggregation']}`, seed "
        f"`{config['seed']}`, CLIP `{config['clip_model']}` / "
        f"`{config['clip_pretrained']}`",
        "",
    ]
    evals = [x for x in log if "top1" in x]
    if evals:
        best = max(evals, key=lambda x: x["map"] if x.get("map") is not None else x["top1"])
        figures = ", ".join(
            f"{k} {best[k]:.4f}"
            for k in ("top1", "top5", "mean_class_acc", "map")
            if isinstance(best.get(k), float)
        )
        lines += [f"Best evaluation (epoch {best['epoch']}): {figures}.", ""]
    _curves(log, run_dir / "curves.png")
    lines += ["![loss and accuracy](curves.png)", ""]
    per_class = run_dir / "per_class_accuracy.csv"
    predictions = run_dir / "predictions.parquet"
    if per_class.exists():
        frame = pd.read_csv(per_class)
        _per_class(frame, run_dir / "per_class.png")
        lines += ["![per-class accuracy](per_class.png)", ""]
        if predictions.exists():
            pred = pd.read_parquet(predictions)
            matrix = confusion_matrix(pred["pred"].to_numpy(), pred["label"].to_numpy(), len(frame))
            _confusion(matrix, frame["class_name"].tolist(), run_dir / "confusion.png")
            lines += ["![confusion matrix](confusion.png)", ""]
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
