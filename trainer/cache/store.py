"""The frozen-feature cache: frame embeddings of the frozen CLIP visual tower, stored once.

With `--freeze-backbone` the visual tower is a fixed function of the clip, and it (with
decoding and transforms) is nearly the whole cost of a frozen run. `python -m trainer
cache-features` runs it once over V training views and every evaluation view of each
video; `run --freeze-backbone --features DIR` trains and evaluates from the stored arrays.
This module is the cache's I/O (layout, identity, writing, reading); what a run reads from
it is `trainer.cache.dataset`, and the encoding loop `trainer.cache.build.cache_features`.

A cache directory holds one dataset fold encoded by one CLIP with one set of clip settings:

    meta.json                 identity (`IDENTITY_FIELDS`), storage (`STORAGE_FIELDS`),
                              unreadable videos ("skipped", per split)
    index.parquet             one row per (split, item, view): split ("train"/"test"),
                              item (position in the split's item list), video_id, view,
                              frame_indices list<int32>, labels list<int32>, shard, offset,
                              and the shard file's size and CRC-32 as written
    shards/<split>-NNNNN.npy  [rows, T, D] arrays of `shard_rows` rows (the last may be short)
    index-parts/              while writing: each shard's index rows, merged at the end

A shard is written, then its index rows, each to a temporary file renamed into place, so a
killed job loses at most the shard in progress: rerun it and the (item, view) pairs already
indexed are skipped.

Damage is named, and repaired by a rerun: readers (`FeatureCache`, `read_split`) check that
every shard they need has the size its index rows record, and each shard's CRC-32 the first
time the process reads it (`open_shard`), and refuse a missing, short or altered shard, an
unreadable index.parquet or meta.json in one sentence naming the file; a rerun of
`cache-features` (`CacheWriter`) checks every shard's CRC-32, drops the index rows of a
damaged shard (or ignores an unreadable index.parquet) and so encodes those views again.

Several processes (`torchrun ... -m trainer cache-features`) share the work: every rank
reads the same index at the start, takes every `world`-th missing (item, view) pair, and
numbers its shards `first + k * world + rank`, so no two ranks (and no rerun) write the same
shard; the main rank merges all index rows at the end. A killed rank loses only its shard
in progress, and a rerun with any number of ranks encodes only what no index row holds.

Items are keyed by position, not video id, because Charades action instances share their
video's id; the identity holds a digest of each split's item list, so
positions always mean the same items. Shards are read with `numpy.load(mmap_mode="r")`.

Views. View v of the item at position p of the train split is the clip the training dataset
draws at epoch v for index p (`VideoClipDataset[(v, p)]`, whose randomness is keyed by
(seed, epoch, index)); the test split stores every evaluation view (clips x crops), as the
test dataset gives them. `trainer.cache.dataset.train_view` says which view a cached run
reads.

Storage is float16 by default: half the disk and page cache of float32 (T x D x 2 bytes a
view, 8 KB for 8 frames of ViT-B/16), and its relative rounding of 5e-4 is finer than the
bf16 autocast a frozen GPU run already computes the head in; `--dtype float32` stores the
tower's output exactly.

"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from storyboard_common.errors import UserError, first_line
from storyboard_common.files import atomic_write, atomic_write_json, atomic_write_table

from ..data.dataset import VideoClipDataset
from ..data.items import VideoItem

FORMAT_VERSION = 2  # 2: the index records each shard's size and CRC-32


META_FILE = "meta.json"


INDEX_FILE = "index.parquet"


SHARDS_DIR = "shards"


PARTS_DIR = "index-parts"


TRAIN, TEST = "train", "test"


SHARD_ROWS = 1024


DTYPES = ("float16", "float32")


# What the stored test features depend on (all a cache's reader needs for evaluation),
# and what all of them depend on: a cache that differs in any of these is refused.
TEST_IDENTITY_FIELDS = (
    "version",
    "dataset",
    "fold",
    "clip_model",
    "clip_pretrained",
    "frames",
    "image_size",
    "eval_short_side",
    "eval_clips",
    "eval_crops",
    "eval_transform",
    "test_videos",
)


IDENTITY_FIELDS = (*TEST_IDENTITY_FIELDS, "train_transform", "train_videos")


# How they are stored: a resumed cache must keep them; a run reads them from the cache.
STORAGE_FIELDS = ("views", "seed", "dtype", "feature_dim")


INDEX_SCHEMA = pa.schema(
    [
        ("split", pa.string()),
        ("item", pa.int32()),
        ("video_id", pa.string()),
        ("view", pa.int32()),
        ("frame_indices", pa.list_(pa.int32())),
        ("labels", pa.list_(pa.int32())),
        ("shard", pa.int32()),
        ("offset", pa.int32()),
        ("shard_bytes", pa.int64()),
        ("shard_crc32", pa.int64()),
    ]
)

REMEDY = "rerun `python -m trainer cache-features` with the same flags to repair the cache"


def _items_digest(items: Sequence[VideoItem]) -> str:
    digest = hashlib.sha1()
    for item in items:
        digest.update(f"{item.video_id}\t{item.interval}\t{item.labels}\n".encode())
    return f"{len(items)} items, sha1 {digest.hexdigest()[:12]}"


def _one_line(transform) -> str:
    return " ".join(repr(transform).split())


def cache_identity(
    dataset: str,
    fold: int | None,
    clip_id: tuple[str, str],
    train: VideoClipDataset | None,
    test: VideoClipDataset,
) -> dict:
    """What a cache's features depend on: the dataset fold and its item lists, the CLIP
    (`clip_identity`: model and weights), and the clip settings of the training dataset (all
    its items) and of the test dataset, transforms included. Without `train`, only what
    the test features depend on (`TEST_IDENTITY_FIELDS`: what evaluation checks)."""
    identity = {
        "version": FORMAT_VERSION,
        "dataset": dataset,
        "fold": fold,
        "clip_model": clip_id[0],
        "clip_pretrained": clip_id[1],
        "frames": test.spec.frames,
        "image_size": test.spec.size,
        "eval_short_side": test.spec.short_side,
        "eval_clips": test.spec.clips,
        "eval_crops": test.spec.crops,
        "eval_transform": _one_line(test.transform),
        "test_videos": _items_digest(test.items),
    }
    if train is not None:
        identity["train_transform"] = _one_line(train.transform)
        identity["train_videos"] = _items_digest(train.items)
    return identity


def _check_fields(directory: Path, cached: dict, wanted: dict, names, remedy: str) -> None:
    for name in names:
        if cached.get(name) != wanted[name]:
            raise UserError(
                f"{directory} was cached with {name}={cached.get(name)}, not {wanted[name]}; "
                f"{remedy}"
            )


def _write_meta(directory: Path, meta: dict) -> None:
    atomic_write_json(directory / META_FILE, meta, indent=1)


def read_meta(directory: Path) -> dict:
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise UserError(
            f"{directory} is not a feature cache (no {META_FILE}); make one with "
            "`python -m trainer cache-features`."
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        meta = exc
    if not isinstance(meta, dict):
        raise UserError(
            f"{path} is damaged (not a JSON object): the cache's identity is lost; remove "
            f"{directory} and make it again with `python -m trainer cache-features`."
        )
    return meta


def _shard_name(split: str, shard: int) -> str:
    return f"{split}-{shard:05d}"


def _read_table(path: Path) -> pa.Table:
    try:
        return pq.read_table(path, schema=INDEX_SCHEMA)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise UserError(f"{path} is damaged ({first_line(exc, 80)}); {REMEDY}.") from exc


def _index_tables(directory: Path, damaged: list[Path] | None = None) -> list[pa.Table]:
    """`index.parquet` and the index rows of the shards written since it was last merged.
    An index file that cannot be read is refused, or with a `damaged` list, added to it and
    counted as absent (its views are encoded again)."""

    def read(path: Path) -> list[pa.Table]:
        try:
            return [_read_table(path)]
        except UserError:
            if damaged is None:
                raise
            damaged.append(path)
            return []

    merged = directory / INDEX_FILE
    tables = read(merged) if merged.is_file() else []
    done = (
        set()
        if not tables
        else set(zip(tables[0]["split"].to_pylist(), tables[0]["shard"].to_pylist()))
    )
    for part in sorted((directory / PARTS_DIR).glob("*.parquet")):
        for table in read(part):
            if len(table) and (table["split"][0].as_py(), table["shard"][0].as_py()) not in done:
                tables.append(table)
    return tables


def _concat(tables: list[pa.Table]) -> pa.Table:
    return pa.concat_tables([INDEX_SCHEMA.empty_table(), *tables])


def read_index(directory: Path) -> pd.DataFrame:
    """The whole index of a cache directory, one row per stored view."""
    return _concat(_index_tables(Path(directory))).to_pandas()


def _shard_path(directory: Path, split: str, shard: int) -> Path:
    return directory / SHARDS_DIR / f"{_shard_name(split, shard)}.npy"


def _shards(index: pd.DataFrame) -> pd.DataFrame:
    """One row per shard an index names: split, shard, and its recorded size and CRC-32."""
    return index.drop_duplicates(["split", "shard"])[
        ["split", "shard", "shard_bytes", "shard_crc32"]
    ]


def check_shard_sizes(directory: Path, index: pd.DataFrame) -> None:
    """Refuse, in one sentence naming it, a shard of `index` that is missing or not the size
    it was written with (a stat per shard: cheap enough for every reader)."""
    for split, shard, size, _ in _shards(index).itertuples(index=False):
        path = _shard_path(directory, split, shard)
        found = path.stat().st_size if path.is_file() else None
        if found != size:
            state = "missing" if found is None else f"{found} bytes, not the {size} written"
            raise UserError(f"{path} is damaged ({state}); {REMEDY}.")


def _damaged_shards(directory: Path, index: pd.DataFrame) -> list[Path]:
    """The shards of `index` that are missing, or whose size or CRC-32 differs from what
    was recorded when they were written (reads every shard once)."""
    damaged = []
    for split, shard, size, crc in _shards(index).itertuples(index=False):
        path = _shard_path(directory, split, shard)
        if not path.is_file() or path.stat().st_size != size or file_crc32(path) != crc:
            damaged.append(path)
    return damaged


CRC_CHUNK = 1 << 22  # bytes read at a time: a shard's CRC-32 needs no copy of the shard


def file_crc32(path: Path) -> int:
    """The CRC-32 of a file's bytes (zlib's, as `CacheWriter` records), read in chunks."""
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CRC_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def open_shard(path: Path, crc: int) -> np.ndarray:
    """A shard memory-mapped, once its bytes are checked against the CRC-32 recorded when it
    was written: a shard overwritten with other values of its size is one sentence naming
    it, never read as features (readers open each shard once a process; `make bench`'s
    `shard_crc_rate` and docs/benchmarks.md give the cost)."""
    found = file_crc32(path)
    if found != crc:
        raise UserError(
            f"{path} is damaged (its CRC-32 is {found:08x}, not the {crc:08x} written); {REMEDY}."
        )
    return np.load(path, mmap_mode="r")


class CacheWriter:
    """Adds encoded views to a cache directory a shard at a time (see the module doc); one
    writer per process, `rank` of `world`.

    Opening an existing directory checks its identity and storage against `meta`, and
    opening a new one writes its meta.json (open on the main rank first, then on the others,
    before any rank adds rows: `distributed.main_first`). `pending` says which views are
    still missing, `add` takes encoded rows, `flush` commits a last short shard; `finish`
    (the main rank, once every rank has flushed) merges the index and records the skipped
    videos.
    """

    def __init__(
        self,
        directory: Path,
        meta: dict,
        shard_rows: int = SHARD_ROWS,
        rank: int = 0,
        world: int = 1,
    ):
        self.directory = Path(directory)
        self.meta = meta
        self.shard_rows = shard_rows
        self.rank, self.world = rank, world
        self.damaged: list[Path] = []  # shards found damaged, whose views are encoded again
        if (self.directory / META_FILE).exists():
            _check_fields(
                self.directory,
                read_meta(self.directory),
                meta,
                IDENTITY_FIELDS + STORAGE_FIELDS,
                "pass another --out, or the same flags to resume it.",
            )
            if rank == 0:  # the others open it after the main rank (`main_first`)
                self._repair()
        elif self.directory.is_dir() and any(self.directory.iterdir()):
            raise UserError(
                f"{self.directory} is not empty and not a feature cache (no {META_FILE}); "
                "pass a new or empty --out."
            )
        else:
            _write_meta(self.directory, {**meta, "skipped": {TRAIN: [], TEST: []}})
        index = read_index(self.directory)
        self._done: dict[str, set[tuple[int, int]]] = {}
        self._first_shard: dict[str, int] = {}  # above every shard indexed when opened
        self._written: dict[str, int] = {TRAIN: 0, TEST: 0}  # shards this writer committed
        for split in (TRAIN, TEST):
            rows = index[index["split"] == split]
            self._done[split] = set(zip(rows["item"].tolist(), rows["view"].tolist()))
            self._first_shard[split] = int(rows["shard"].max()) + 1 if len(rows) else 0
        self._rows: dict[str, list[dict]] = {TRAIN: [], TEST: []}
        self._features: dict[str, list[np.ndarray]] = {TRAIN: [], TEST: []}

    def _repair(self) -> None:
        """Merge the index, leaving out the rows of damaged shards (missing, short, or not
        the bytes written) and of unreadable index files, so their views count as missing."""
        index = _concat(_index_tables(self.directory, self.damaged))
        shards = _damaged_shards(self.directory, index.to_pandas())
        keep = [
            _shard_path(self.directory, split, shard) not in shards
            for split, shard in zip(index["split"].to_pylist(), index["shard"].to_pylist())
        ]
        atomic_write_table(index.filter(pa.array(keep, pa.bool_())), self.directory / INDEX_FILE)
        shutil.rmtree(self.directory / PARTS_DIR, ignore_errors=True)
        for path in shards:
            path.unlink(missing_ok=True)
        self.damaged += shards

    def pending(self, split: str, items: int, views: int) -> dict[int, list[int]]:
        """item position -> the views of it not in the index yet (items with none left out)."""
        done = self._done[split]
        missing = {p: [v for v in range(views) if (p, v) not in done] for p in range(items)}
        return {p: left for p, left in missing.items() if left}

    def add(self, split: str, rows: list[dict], features: np.ndarray) -> None:
        """Rows (item, video_id, view, frame_indices, labels) and their features [n, T, D]."""
        self._rows[split].extend(rows)
        self._features[split].append(features.astype(self.meta["dtype"]))
        while len(self._rows[split]) >= self.shard_rows:
            self._commit(split, self.shard_rows)

    def _commit(self, split: str, count: int) -> None:
        stacked = np.concatenate(self._features[split])
        rows, self._rows[split] = self._rows[split][:count], self._rows[split][count:]
        self._features[split] = [stacked[count:]]
        shard = self._first_shard[split] + self._written[split] * self.world + self.rank
        name = _shard_name(split, shard)
        buffer = io.BytesIO()
        np.save(buffer, stacked[:count])
        data = buffer.getvalue()
        atomic_write(self.directory / SHARDS_DIR / f"{name}.npy", lambda fh: fh.write(data))
        written = {"split": split, "shard": shard, "shard_bytes": len(data)}
        written["shard_crc32"] = zlib.crc32(data)
        part = pa.Table.from_pylist(
            [{**row, **written, "offset": i} for i, row in enumerate(rows)], schema=INDEX_SCHEMA
        )
        # The index rows commit the shard: a shard without them is removed by `finish`.
        atomic_write_table(part, self.directory / PARTS_DIR / f"{name}.parquet")
        self._done[split].update((row["item"], row["view"]) for row in rows)
        self._written[split] += 1

    def flush(self) -> None:
        """Commit the rows still held (a short last shard of each split)."""
        for split in (TRAIN, TEST):
            if self._rows[split]:
                self._commit(split, len(self._rows[split]))

    def finish(self, skipped: dict[str, list[dict]]) -> None:
        """Merge every rank's index rows into `index.parquet`, record `skipped` ({split:
        [{item, video_id, reason}]}) in meta.json, and remove what killed jobs left (shards
        no index row names, temporary files). Call after every rank's `flush`."""
        index = _concat(_index_tables(self.directory))
        atomic_write_table(index, self.directory / INDEX_FILE)
        shutil.rmtree(self.directory / PARTS_DIR, ignore_errors=True)
        named = zip(index["split"].to_pylist(), index["shard"].to_pylist())
        kept = {f"{_shard_name(split, shard)}.npy" for split, shard in named}
        shards = self.directory / SHARDS_DIR
        for path in shards.iterdir() if shards.is_dir() else ():
            if path.name not in kept:
                path.unlink()
        _write_meta(self.directory, {**self.meta, "skipped": skipped})


class FeatureCache:
    """A finished cache directory, checked against the identity a run expects (every
    field of `identity`: a run's whole `cache_identity`, or evaluation's test part).

    `sizes` gives the item count of each split to read; every item must have all its views
    (V training views, clips x crops test views) or be listed as skipped, else the cache is
    incomplete.
    """

    def __init__(self, directory: Path, identity: dict, sizes: dict[str, int]):
        self.directory = Path(directory)
        self.meta = read_meta(self.directory)
        _check_fields(
            self.directory,
            self.meta,
            identity,
            [name for name in IDENTITY_FIELDS if name in identity],
            "make a cache with the run's settings (`python -m trainer "
            "cache-features`) or pass the one made with them.",
        )
        index = read_index(self.directory)
        index = index[index["split"].isin(list(sizes))]
        check_shard_sizes(self.directory, index)
        self._crc = {
            (split, shard): crc for split, shard, _, crc in _shards(index).itertuples(index=False)
        }
        self.views = {
            TRAIN: self.meta["views"],
            TEST: self.meta["eval_clips"] * self.meta["eval_crops"],
        }
        self.skipped = {
            split: {s["item"]: s["reason"] for s in self.meta["skipped"][split]}
            for split in (TRAIN, TEST)
        }
        self.location: dict[str, np.ndarray] = {}  # split -> [items, views, (shard, offset)]
        incomplete = 0
        for split, size in sizes.items():
            where = np.full((size, self.views[split], 2), -1, dtype=np.int64)
            rows = index[index["split"] == split]
            where[rows["item"].to_numpy(), rows["view"].to_numpy()] = rows[["shard", "offset"]]
            self.location[split] = where
            missing = (where[..., 0] < 0).any(axis=1)
            incomplete += sum(1 for p in np.flatnonzero(missing) if p not in self.skipped[split])
        if incomplete:
            raise UserError(
                f"{self.directory} is incomplete ({incomplete} videos not encoded yet); rerun "
                "`python -m trainer cache-features` with the same flags to finish it."
            )
        self._shards: dict[tuple[str, int], np.ndarray] = {}

    def __getstate__(self) -> dict:
        # DataLoader workers open their own memory maps (pickling one would copy the shard).
        return {**self.__dict__, "_shards": {}}

    def _shard(self, split: str, shard: int) -> np.ndarray:
        key = (split, shard)
        if key not in self._shards:  # the first read of this shard in this process
            path = _shard_path(self.directory, split, shard)
            self._shards[key] = open_shard(path, self._crc[key])
        return self._shards[key]

    def read(self, split: str, item: int, views: Sequence[int]) -> np.ndarray:
        """The features [len(views), T, D] of views of the item at position `item`; a
        non-finite value is one sentence naming its shard (cheap beside the copy, and it
        would otherwise end the run as a NaN loss)."""
        where = self.location[split][item, list(views)]
        features = np.stack([self._shard(split, int(s))[o] for s, o in where])
        if not np.isfinite(features).all():
            shard = next(int(s) for (s, _), f in zip(where, features) if not np.isfinite(f).all())
            raise UserError(
                f"{self.directory / SHARDS_DIR / _shard_name(split, shard)}.npy holds features "
                "that are not finite (NaN or infinity): delete the cache and encode it again "
                "(`python -m trainer cache-features`)."
            )
        return features


@dataclass(frozen=True)
class CachedRows:
    """Rows of a cache split in (item, view) order: features [M, T, D] and per row its
    item position, view, video id, sampled frame indices and labels."""

    features: np.ndarray
    items: np.ndarray
    views: np.ndarray
    video_ids: list[str]
    frame_indices: list[list[int]]
    labels: list[list[int]]


def read_split(directory: Path, split: str, view: int | None = None) -> CachedRows:
    """Every stored row of one split of a finished cache (or only view `view` of each item),
    read whole into memory: for analyses over a whole split, not for training."""
    directory = Path(directory)
    index = read_index(directory)
    rows = index[index["split"] == split]
    if view is not None:
        rows = rows[rows["view"] == view]
    if rows.empty:
        raise UserError(
            f"{directory} holds no {split} rows{'' if view is None else f' of view {view}'}."
        )
    rows = rows.sort_values(["item", "view"])
    check_shard_sizes(directory, rows)
    shards: dict[int, np.ndarray] = {}
    features = []
    for shard, offset, crc in zip(
        rows["shard"].tolist(), rows["offset"].tolist(), rows["shard_crc32"].tolist()
    ):
        if shard not in shards:
            shards[shard] = open_shard(_shard_path(directory, split, shard), crc)
        features.append(shards[shard][offset])
    return CachedRows(
        features=np.stack(features),
        items=rows["item"].to_numpy(),
        views=rows["view"].to_numpy(),
        video_ids=rows["video_id"].tolist(),
        frame_indices=[list(map(int, f)) for f in rows["frame_indices"]],
        labels=[list(map(int, lab)) for lab in rows["labels"]],
    )
