"""`predict`: the top classes of one video, and a filmstrip of what the model looked at.

The plot shows the sampled frames, the coarse and fine importance of each frame for the
top class (as in the paper's Table 6), the class's sub-texts, and which sub-text each frame
matches best (the inner term of Eq. 10).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from storyboard_common.errors import UserError
from storyboard_common.files import atomic_savefig

from .data.sampling import clip_indices
from .data.transforms import eval_transform
from .data.video import VideoError, open_video, read_frames
from .model.aggregation import subtext_frame_similarity
from .run_models import load_run


@dataclass(frozen=True)
class Prediction:
    video: Path
    top: list[tuple[str, float]]  # (class name, probability), best first
    frames: np.ndarray  # uint8 [T, S, S, 3], as the model saw them
    coarse: np.ndarray | None  # [T] importance for the top class
    fine: np.ndarray | None  # [T]
    sub_texts: list[str]  # the top class's sub-texts
    best_sub_text: np.ndarray  # [T] index into sub_texts


@torch.inference_mode()
def predict_video(
    run_dir: Path,
    video: Path,
    subtexts: Path | None = None,
    device: str = "auto",
    top: int = 5,
    **given,
) -> Prediction:
    """The top classes of `video` and what the model looked at. `given`: where the run's
    CLIP files are now (`clip_model`, `clip_pretrained`), if they moved."""
    loaded = load_run(run_dir, None, subtexts, device, **given)
    model, text, size = loaded.built.model, loaded.built.text, loaded.built.image_size
    try:
        reader, info = open_video(video, size)
        indices = clip_indices(info.num_frames, loaded.cfg.frames, 1)[0]
        frames = read_frames(reader, indices.tolist())
    except (VideoError, ValueError) as exc:
        raise UserError(f"{video} cannot be used: {exc}.") from exc
    clip = eval_transform(size, size, 1)(frames)  # uint8 [T, 3, S, S]
    out = model(clip[None].to(loaded.dist_info.device), text)
    probs = out["logits"][0].float().softmax(-1).cpu()
    if not torch.isfinite(probs).all():  # never printed as a result
        raise UserError(
            f"{loaded.checkpoint['source']} gives probabilities that are not finite for {video}: "
            "its logits overflow (its weights are finite); train it again with a lower --lr."
        )
    best = probs.argsort(descending=True)[:top].tolist()
    c = best[0]
    similarity = subtext_frame_similarity(out["frames"], text.sub_tokens, text.sub_mask)
    return Prediction(
        video=Path(video),
        top=[(loaded.class_names[i], float(probs[i])) for i in best],
        frames=clip.permute(0, 2, 3, 1).numpy(),
        coarse=None if out["coarse"] is None else out["coarse"][0, c].float().cpu().numpy(),
        fine=None if out["fine"] is None else out["fine"][0, c].float().cpu().numpy(),
        sub_texts=loaded.built.sub_texts[c],
        best_sub_text=similarity[0, c].argmax(0).cpu().numpy(),
    )


def prediction_figure(pred: Prediction):
    """A matplotlib Figure: the filmstrip (each frame titled with its best sub-text, S1..SN),
    coarse and fine importance bars, and the top class with its sub-texts."""
    from matplotlib.figure import Figure

    frames = len(pred.frames)
    fig = Figure(figsize=(max(6, 1.3 * frames), 5.2))
    grid = fig.add_gridspec(3, frames, height_ratios=[1.2, 1, 0.9])
    for t in range(frames):
        ax = fig.add_subplot(grid[0, t])
        ax.imshow(pred.frames[t])
        ax.set_axis_off()
        ax.set_title(f"S{int(pred.best_sub_text[t]) + 1}", fontsize=8)
    bars = fig.add_subplot(grid[1, :])
    x = np.arange(frames)
    for offset, (name, values) in zip((-0.2, 0.2), (("coarse", pred.coarse), ("fine", pred.fine))):
        if values is not None:
            bars.bar(x + offset, values, width=0.4, label=f"{name} importance")
    bars.set_xticks(x, [f"frame {t + 1}" for t in x], fontsize=7)
    bars.set_ylabel("weight")
    if pred.coarse is not None or pred.fine is not None:
        bars.legend(fontsize=7)
    text = fig.add_subplot(grid[2, :])
    text.set_axis_off()
    name, prob = pred.top[0]
    lines = [f"top class: {name} ({prob:.2f})"]
    lines += [f"S{i + 1}: {s}" for i, s in enumerate(pred.sub_texts)]
    text.text(0, 1, "\n".join(lines), va="top", fontsize=8, family="monospace")
    fig.suptitle(pred.video.name, fontsize=9)
    fig.tight_layout()
    return fig


def check_plot_path(path: Path) -> None:
    """Refuse a `--plot` path the figure cannot be written to (a folder, or a suffix that is
    no image format matplotlib writes), before any prediction runs."""
    from matplotlib.backend_bases import FigureCanvasBase

    path = Path(path)
    if path.is_dir():
        raise UserError(f"--plot {path} is a folder: pass a file name such as {path / 'plot.png'}.")
    formats = FigureCanvasBase.get_supported_filetypes()
    if path.suffix.lstrip(".").lower() not in formats:
        raise UserError(
            f"--plot {path} has no image suffix matplotlib writes: use one of "
            f"{', '.join('.' + name for name in sorted(formats))}."
        )


def plot_prediction(pred: Prediction, path: Path) -> Path:
    """`prediction_figure` saved as a PNG at `path`."""
    path = Path(path)
    atomic_savefig(prediction_figure(pred), path, dpi=110)
    return path
