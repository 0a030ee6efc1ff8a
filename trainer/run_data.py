"""What a run reads: the fold's train and test lists (few-shot selection and repetition
included), the clip datasets over them, and the checks made before training.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from storyboard_common.classes import class_key, match_names, unknown_names
from storyboard_common.errors import UserError

from .data.dataset import ClipSpec, VideoClipDataset, loader_workers, short_videos
from .data.frames import is_frame_folder
from .data.items import SplitList, VideoItem
from .data.layouts import load_split, test_split
from .data.protocols import fewshot_items, load_item_list, repeat_factor
from .settings import RunConfig


@dataclass
class RunData:
    train: SplitList
    test: SplitList
    train_items: list  # after few-shot selection and repetition
    fewshot: list | None


def load_fold(cfg: RunConfig, root: Path, fold: int | None) -> tuple[SplitList, SplitList]:
    """The fold's train split (Charades: action instances unless the run says otherwise)
    and its test split (whole videos)."""
    lists = cfg.list_files()
    train = load_split(cfg.dataset, root, "train", fold, cfg.videos, cfg.charades_instances, lists)
    test = load_split(cfg.dataset, root, test_split(cfg.dataset), fold, cfg.videos, False, lists)
    return train, test


def check_decode_device(
    decode_device: str, device: torch.device, items: Iterable[VideoItem]
) -> bool:
    """Whether the loader hands over frame folders' JPEG bytes for `device` to decode
    (`--decode-device cuda`); refused in one sentence where the run has no GPU or an item is
    not a frame folder (a video file), before anything is read."""
    if decode_device != "cuda":
        return False
    if device.type != "cuda":
        where = (
            f"this run computes on {device} (--device)"
            if torch.cuda.is_available()
            else "torch sees no CUDA device here"
        )
        raise UserError(
            f"--decode-device cuda decodes JPEGs on the run's GPU, and {where}: use "
            "--decode-device cpu."
        )
    video = next((item.path for item in items if not is_frame_folder(item.path)), None)
    if video is not None:
        raise UserError(
            f"--decode-device cuda reads frame folders, and {video} is a video file: write "
            "frame folders with `python -m trainer prepare-videos --to frames` and pass their "
            "folder as --root, or leave --decode-device at cpu."
        )
    return True


def eval_spec(cfg: RunConfig, size: int) -> ClipSpec:
    """How test clips are cut: every `--clips x --crops` view, at the CLIP's input size."""
    return ClipSpec(
        frames=cfg.frames,
        train=False,
        clips=cfg.eval_clips,
        crops=cfg.eval_crops,
        size=size,
        short_side=size,
    )


def prepare_data(cfg: RunConfig, root: Path, fold: int | None) -> RunData:
    train, test = load_fold(cfg, root, fold)
    items, chosen = list(train.items), None
    if cfg.fewshot_list is not None:
        chosen = load_item_list(cfg.fewshot_list, train)
    elif cfg.shots:
        chosen = fewshot_items(train, cfg.shots, cfg.seed)
    if chosen is not None:
        # as many items per epoch as the whole train list
        items = chosen * repeat_factor(len(chosen), len(train.items))
    if not items:
        raise UserError(f"the {cfg.dataset} train split under {root} has no videos on disk.")
    return RunData(train, test, items, chosen)


def clip_datasets(
    cfg: RunConfig,
    train: SplitList,
    train_items: list,
    test: SplitList,
    size: int,
    encoded: bool = False,
) -> tuple[VideoClipDataset, VideoClipDataset]:
    """A run's training clips (of `train_items`, drawn from the `train` split) and test clips
    (every view of every test video), for a CLIP of input size `size`; `encoded`: as JPEG
    bytes for the device to decode (`check_decode_device`)."""
    train_spec = ClipSpec(frames=cfg.frames, train=True, size=size)
    num_classes = len(train.class_names)
    return (
        VideoClipDataset(
            train_items, num_classes, train.multi_label, train_spec, cfg.seed, encoded
        ),
        VideoClipDataset(
            test.items, num_classes, test.multi_label, eval_spec(cfg, size), encoded=encoded
        ),
    )


def check_classes(split: SplitList, class_names: list[str], artifact_path: Path) -> None:
    """The artifact's classes must be the dataset's, in the same order, spelled alike under
    `class_key` (`brush hair` is `brush_hair`)."""
    if [class_key(n) for n in split.class_names] == [class_key(n) for n in class_names]:
        return
    in_artifact = match_names(split.class_names, class_names)
    in_dataset = match_names(class_names, split.class_names)
    if not in_artifact.missing and not in_dataset.missing:
        detail = "same classes in another order"
    else:
        detail = (
            f"not in the artifact: {unknown_names(in_artifact.missing, class_names) or 'none'}; "
            f"only in the artifact: {', '.join(map(repr, in_dataset.missing[:10])) or 'none'}"
        )
    raise UserError(
        f"{artifact_path} holds other classes than {split.dataset} ({detail}); "
        "generate and score sub-texts for this dataset."
    )


def check_clip_lengths(cfg: RunConfig, data: RunData) -> None:
    """Before training: refuse when every probed training (or test) video is shorter than
    `--frames` (an epoch would read no clip); warn when some are."""
    train_items = data.fewshot if data.fewshot is not None else data.train.items
    for what, items in (("training", train_items), ("test", data.test.items)):
        short, opened = short_videos(items, cfg.frames, workers=max(1, loader_workers(cfg.workers)))
        if not short:
            continue
        item, length = short[0]
        counted = f"{len(short)} of the {opened} {what} videos probed"
        if len(short) == opened:
            raise UserError(
                f"{counted} are shorter than --frames {cfg.frames} (e.g. {item.path} has "
                f"{length} frames): lower --frames, or list the short videos with `python -m "
                f"trainer check-data --frames {cfg.frames}`."
            )
        warnings.warn(
            f"{counted} are shorter than --frames {cfg.frames} (e.g. {item.path} has {length} "
            "frames) and will be skipped; `python -m trainer check-data` lists them.",
            stacklevel=2,
        )
