"""Building a feature cache (`python -m trainer cache-features`): the frozen visual tower
over every missing (item, view) pair of one fold, shared among torchrun ranks; the layout
it writes is `trainer/cache/store.py`'s.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from storyboard_common.clip import clip_identity, load_clip
from storyboard_common.errors import UserError, check_ranges
from storyboard_common.progress import progress_bar

from ..data.dataset import Skipped, VideoClipDataset, loader_workers, make_loader
from ..data.layouts import folds
from ..distributed import DistInfo, gather_objects, init_distributed, main_first, wait_for_all
from ..evaluation import model_inputs
from ..model.video_clip import encode_frames
from ..paths import dataset_root, default_features_dir, writable_dir
from ..precision import autocast
from ..run_data import check_decode_device, clip_datasets, load_fold
from ..settings import COMMAND_BOUNDS, RunConfig
from .store import DTYPES, SHARD_ROWS, TEST, TRAIN, CacheWriter, cache_identity


class _Pending(torch.utils.data.Dataset):
    """(item, views, sample) for keys (item, views): the views of an item that the cache
    lacks, decoded from one open of its video (`VideoClipDataset.views`)."""

    def __init__(self, dataset: VideoClipDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        p, views = key
        epochs = views if self.dataset.spec.train else [0]  # training view v is epoch v's clip
        return p, views, self.dataset.views(p, epochs)


def _encode_split(
    writer: CacheWriter,
    split: str,
    dataset: VideoClipDataset,
    views: int,
    visual,
    cfg: RunConfig,
    dist_info: DistInfo,
    progress,
) -> tuple[int, dict[int, dict]]:
    """Encode this rank's share of the views of one split that the cache lacks, `--batch-size`
    clips a forward pass; -> (rows encoded, unreadable items by position)."""
    pending = writer.pending(split, len(dataset), views)
    # A training item gives its missing views (one clip each), a test item all its views.
    keys = [(p, tuple(left)) for p, left in pending.items()][dist_info.rank :: dist_info.world]
    loader = make_loader(
        _Pending(dataset),
        max(1, cfg.batch_size // views),
        keys,
        loader_workers(cfg.workers),
        cfg.prefetch,
        collate=list,
    )
    task = progress.add_task(f"encode {split}", total=sum(map(len, (k[1] for k in keys))), info="")
    encoded, skipped = 0, {}
    rows, clips = [], []

    def encode(count: int) -> int:
        with torch.inference_mode(), autocast(dist_info.device, cfg.amp):
            features = encode_frames(visual, torch.stack(clips[:count]))
        writer.add(split, rows[:count], features.float().cpu().numpy())
        del rows[:count], clips[:count]
        return count

    for samples in loader:
        for p, wanted, sample in samples:
            if isinstance(sample, Skipped):
                skipped[p] = {"item": p, "video_id": sample.video_id, "reason": sample.reason}
                continue
            shown = wanted if split == TRAIN else range(views)  # the sample's views, in order
            frames = model_inputs(sample, dist_info.device)  # decoded there, if JPEG bytes
            for row, view in enumerate(shown):
                if view in wanted:
                    rows.append(
                        {
                            "item": p,
                            "video_id": sample["video_id"],
                            "view": view,
                            "frame_indices": sample["frame_indices"][row].tolist(),
                            "labels": list(dataset.items[p].labels),
                        }
                    )
                    clips.append(frames[row])
        while len(clips) >= cfg.batch_size:
            encoded += encode(cfg.batch_size)
        progress.update(
            task, advance=sum(len(w) for _, w, _ in samples), info=f"{len(skipped)} unreadable"
        )
    if clips:
        encoded += encode(len(clips))
    progress.remove_task(task)
    return encoded, skipped


def cache_features(
    cfg: RunConfig,
    out: Path | None = None,
    views: int | None = None,
    dtype: str = "float16",
    shard_rows: int = SHARD_ROWS,
    show_progress: bool = True,
) -> dict:
    """Encode one fold with the frozen visual tower into a feature cache (`out`, default
    `artifacts/features/<dataset>[-split<fold>]-<clip tag>-f<frames>`): `views` training
    views of each video (default `cfg.epochs`) and every evaluation view. Resumes a cache
    left unfinished, and repairs a damaged one (its damaged shards and index files are
    dropped and their views encoded again); refuses one made with other settings. Under
    torchrun each rank encodes its share (`trainer/cache/`). -> {out, encoded (rows per
    split, all ranks), skipped (per split), repaired (the damaged files found), bytes,
    seconds (encoding and merging, after set-up)}."""
    if cfg.split == "all":
        raise UserError("cache-features caches one fold: pass --split 1, 2 or 3.")
    views = cfg.epochs if views is None else views
    check_ranges(COMMAND_BOUNDS, {"--views": views})  # before the meta file pins it
    if dtype not in DTYPES:
        raise UserError(f"--dtype must be {' or '.join(DTYPES)}, not {dtype!r}.")
    dist_info = init_distributed(cfg.device, cfg.dist_timeout)
    root = dataset_root(cfg.dataset, cfg.root)
    fold = folds(cfg.dataset, cfg.split)[0]
    out = Path(
        out
        or default_features_dir(
            cfg.dataset, fold, clip_identity(cfg.clip_model, cfg.clip_pretrained), cfg.frames
        )
    )
    train, test = load_fold(cfg, root, fold)
    as_jpegs = check_decode_device(cfg.decode_device, dist_info.device, [*train.items, *test.items])
    writable_dir(out)
    clip = load_clip(cfg.clip_model, cfg.clip_pretrained, str(dist_info.device))
    clip_id = (clip.model_id, clip.pretrained_id)
    train_set, test_set = clip_datasets(
        cfg, train, list(train.items), test, clip.image_size, as_jpegs
    )
    meta = {
        **cache_identity(cfg.dataset, fold, clip_id, train_set, test_set),
        "views": views,
        "seed": cfg.seed,
        "dtype": dtype,
        "feature_dim": clip.embed_dim,
    }
    writer = main_first(
        lambda: CacheWriter(out, meta, shard_rows, dist_info.rank, dist_info.world), dist_info
    )
    started = time.perf_counter()
    encoded, skipped = {}, {}
    with progress_bar(show_progress and dist_info.is_main) as progress:
        for split, dataset, split_views in (
            (TRAIN, train_set, views),
            (TEST, test_set, test_set.spec.views),
        ):
            encoded[split], skipped[split] = _encode_split(
                writer, split, dataset, split_views, clip.model.visual, cfg, dist_info, progress
            )
    writer.flush()
    ranks = gather_objects((encoded, skipped), dist_info)  # also waits for every flush
    encoded = {split: sum(part[0][split] for part in ranks) for split in (TRAIN, TEST)}
    unreadable = {
        split: {p: entry for part in ranks for p, entry in part[1][split].items()}
        for split in (TRAIN, TEST)
    }
    skipped = {
        split: [unreadable[split][p] for p in sorted(unreadable[split])] for split in (TRAIN, TEST)
    }
    if dist_info.is_main:
        writer.finish(skipped)
    wait_for_all(dist_info)
    return {
        "out": out,
        "encoded": encoded,
        "skipped": skipped,
        "repaired": [str(path) for path in writer.damaged],
        "bytes": sum(f.stat().st_size for f in out.rglob("*") if f.is_file()),
        "seconds": time.perf_counter() - started,
    }
