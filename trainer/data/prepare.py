"""`prepare-videos`: a dataset re-encoded once so that sampled frames decode fast, as video
copies (`--to videos`, the default) or as frame folders (`--to frames`).

decord seeks to the keyframe before each sampled frame and decodes from there, so a clip
read costs about (frames between keyframes) x (pixels per frame). Raw downloads are large
(Kinetics: often 1280x720) with a keyframe every 5-10 seconds; a copy at a short side of
256 with a keyframe every 16 frames reads several times faster (`make bench`,
`prepared_decode_speedup`).

Every output is H.264 (libx264, yuv420p, crf 23, preset veryfast, tune fastdecode) in an
MP4 container: the short side scaled to `short_side` (never up; width and height even,
aspect kept), a keyframe every `keyframe_every` frames exactly (keyint = min-keyint, no
scene-cut keyframes, source keyframes not carried over), no audio, and every source frame
kept at the rate the training reader gives the source (the n-th decoded frame gets
timestamp n / rate), so frame i of the copy is frame i of the source and Charades'
annotation seconds keep their frames.

Names: an output lies under `out` at its source's path relative to `root`, with the same
file name and extension, so the layouts, which find videos by name, find the copies and
`--root OUT` works unchanged. Videos read from `--videos DIR` go where the layout looks
for them under a root (Charades: `Charades_v1_480/`, SSv2:
`20bn-something-something-v2/`; the others: the root itself), so no `--videos` is needed
with the copy. The container is MP4 whatever the name says (`.avi`, `.mkv` and `.webm`
included): FFmpeg's readers (decord, PyAV, OpenCV) identify a container by its content;
WebM cannot hold H.264, and decord's `get_batch` returns wrong frames from H.264 in AVI
(measured with decord 0.6.0: frames mixed from two pictures after a seek; MP4 is
frame-exact).

`--to frames` writes each video as a frame folder (`trainer/data/frames.py`): the video's
path without its extension, one JPEG per frame (`img_00001.jpg`, ...), every frame, the
short side scaled to `short_side` (never up; any width and height) exactly as the training
reader resizes (decord decodes every frame in order, torch's antialiased resize), and the
source's rate, as the training reader reports it, in the folder's `fps.txt`, so Charades'
annotation seconds keep their frames. JPEGs are written by torchvision's `encode_jpeg`
(libjpeg-turbo) at quality JPEG_QUALITY = 90: measured on the bench's 455x256 frames,
encoding 0.8 ms and decoding 0.6 ms a frame at 75, 85, 90 and 95 alike (so the quality
is a question of bytes, not speed), 50 KB a frame at 90 against 71 at 95 (mmcv's and
hence BIKE's/mmaction2's default), with a mean absolute error of 4.4 grey levels against
3.6 at 95 and 6.1 at 75. PyAV's mjpeg encoder was no faster (0.9 ms a frame).

Resumable and atomic: each output is written as `.<name>.partial` beside its final name,
opened with the training reader and its frame count compared with the source's (within
one frame for a video copy, exactly for a frame folder), then renamed, and what it was
when verified is recorded in `VERIFIED` (a video copy's size and modification time, a
frame folder's file count and total size). A rerun skips the outputs that are still as
recorded, prepares again those changed since (truncated, rewritten, a frame lost) and
rewrites leftover partials. `MARKER` in `out` records the settings, `--to` included, and
the source (`--root`, and `--videos`), so a rerun with other settings or from another
source, or an `out` that holds something else, is refused before anything is written;
`LOCK`, held while a run writes, refuses a second writer.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import islice
from pathlib import Path

import av
import torch
from av.video.frame import PictureType
from torchvision.io import encode_jpeg, write_file

from storyboard_common.device import available_cores
from storyboard_common.errors import UserError, first_line
from storyboard_common.files import atomic_path, atomic_write_json, atomic_write_text, os_reason
from storyboard_common.locks import folder_lock
from storyboard_common.progress import progress_bar

from .check import load_dataset_splits
from .frames import FPS_FILE, folder_name, fps_text, frame_file
from .items import SplitList
from .layouts import ListFiles, dataset_name, layout
from .layouts._common import absolute
from .video import VideoError, VideoInfo, open_video, read_frames, resize_reader, short_side_size

MARKER = "storyboard-prepared.json"
VERIFIED = "storyboard-prepared-outputs.jsonl"  # one line per output as verified
LOCK = ".prepare.lock"
VERSION = 1
CRF = 23
PRESET = "veryfast"
# No CABAC, no deblocking: on the bench's clips 45% more clip reads/s for 12% more bytes.
TUNE = "fastdecode"
PARTIAL = ".partial"
JPEG_QUALITY = 90
TARGETS = ("videos", "frames")  # --to


@dataclass(frozen=True)
class PrepareSettings:
    """What a prepared folder was made with; a rerun must use the same."""

    dataset: str
    short_side: int = 256
    keyframe_every: int = 16  # video copies only
    to: str = "videos"

    def to_json(self) -> dict:
        made = {"version": VERSION, "dataset": self.dataset, "to": self.to}
        if self.to == "frames":
            return {**made, "short_side": self.short_side, "jpeg_quality": JPEG_QUALITY}
        return {
            **made,
            "short_side": self.short_side,
            "keyframe_every": self.keyframe_every,
            "codec": "libx264",
            "crf": CRF,
            "preset": PRESET,
            "tune": TUNE,
        }

    def flags(self) -> str:
        if self.to == "frames":
            return f"--dataset {self.dataset} --to frames --short-side {self.short_side}"
        return (
            f"--dataset {self.dataset} --short-side {self.short_side} "
            f"--keyframe-every {self.keyframe_every}"
        )

    def done(self, target: Path) -> bool:
        """Whether `target` (a job's output) is finished: renamed from its partial."""
        return target.is_dir() if self.to == "frames" else target.is_file()


@dataclass(frozen=True)
class VideoJob:
    source: Path
    target: Path


@dataclass(frozen=True)
class VideoResult:
    """What became of one source: "prepared", "unreadable" or "mismatched" (the copy's
    frame count differs; the copy is not kept), with the reason and the sizes."""

    source: str
    status: str
    reason: str = ""
    seconds: float = 0.0  # the video's duration
    bytes_before: int = 0
    bytes_after: int = 0


@dataclass
class PrepareSummary:
    out: Path
    videos: int  # distinct videos with a file in the chosen splits
    already_prepared: int  # found finished (a rerun)
    prepared: int = 0  # encoded by this run; hours and bytes count these
    hours: float = 0.0
    bytes_before: int = 0
    bytes_after: int = 0
    unreadable: dict[str, str] = field(default_factory=dict)  # source -> reason
    mismatched: dict[str, str] = field(default_factory=dict)  # source -> reason
    missing: int = 0  # annotation entries without a file (nothing to prepare)
    missing_splits: dict[str, str] = field(default_factory=dict)
    annotation_files: list[str] = field(default_factory=list)  # copied, relative to out
    changed: list[str] = field(default_factory=list)  # outputs changed since verified: redone
    seconds: float = 0.0

    def add(self, result: VideoResult) -> None:
        if result.status == "prepared":
            self.prepared += 1
            self.hours += result.seconds / 3600
            self.bytes_before += result.bytes_before
            self.bytes_after += result.bytes_after
        elif result.status == "unreadable":
            self.unreadable[result.source] = result.reason
        else:
            self.mismatched[result.source] = result.reason

    def to_json(self) -> dict:
        return {
            "out": str(self.out),
            "videos": self.videos,
            "prepared": self.prepared,
            "already_prepared": self.already_prepared,
            "hours": self.hours,
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
            "unreadable": sorted(self.unreadable),
            "unreadable_reasons": self.unreadable,
            "mismatched": sorted(self.mismatched),
            "mismatched_reasons": self.mismatched,
            "missing": self.missing,
            "missing_splits": list(self.missing_splits),
            "annotation_files": self.annotation_files,
            "changed_since_verified": self.changed,
            "seconds": self.seconds,
        }


def prepare_videos(
    dataset: str,
    root: Path,
    out: Path,
    videos: Path | None = None,
    short_side: int = 256,
    keyframe_every: int = 16,
    workers: int | None = None,
    show_progress: bool = True,
    to: str = "videos",
    lists: ListFiles | None = None,
) -> PrepareSummary:
    """Re-encode every video of every split of `dataset` under `root` (or `videos`) whose
    annotation files are there into `out` (`to`: "videos" for video copies, "frames" for
    frame folders), copy the annotation files, and summarise.

    Refused before anything is written (UserError): `out` inside `root` or `videos`, an
    `out` that holds files but is not a prepared folder, or one prepared with other
    settings or from another source; while another process prepares `out`, refused too.
    Unreadable sources and copies whose frame count differs are listed in the summary,
    never fatal; outputs changed since they were verified are prepared again."""
    started = time.perf_counter()
    if to not in TARGETS:
        raise UserError(f"--to must be {' or '.join(TARGETS)}, not {to!r}.")
    settings = PrepareSettings(dataset_name(dataset), short_side, keyframe_every, to)
    root = absolute(root)
    videos = None if videos is None else absolute(videos)
    out = absolute(out)
    _check_out(out, root, videos, settings)
    splits, absent = load_dataset_splits(settings.dataset, root, videos, lists=lists)
    jobs = plan_jobs(settings.dataset, splits, root, videos, out, to)
    folders = _layout_folders(settings.dataset, splits, root, videos)

    with folder_lock(out, LOCK, "`prepare-videos`", "the prepared folder"):
        _check_out(out, root, videos, settings)  # as the previous holder left it
        older = (out / MARKER).is_file() and not (out / VERIFIED).is_file()
        _write_marker(out, settings, root, videos)
        for folder in folders:
            (out / folder).mkdir(parents=True, exist_ok=True)
        copied = copy_annotations(settings.dataset, root, out, lists)
        finished = [job for job in jobs if settings.done(job.target)]
        # outputs of a version that recorded none are taken as they are, once
        recorded = (
            {job.target: output_record(job.target) for job in finished}
            if older
            else read_verified(out)
        )
        intact = {
            job.target for job in finished if recorded.get(job.target) == output_record(job.target)
        }
        changed = [job.target for job in finished if job.target not in intact]
        for target in changed:  # prepared again, from scratch
            _remove(target)
        write_verified(out, {target: recorded[target] for target in intact})
        todo = [job for job in jobs if job.target not in intact]
        summary = PrepareSummary(
            out=out,
            videos=len(jobs),
            already_prepared=len(intact),
            missing=len({m for s in splits for m in s.missing}),
            missing_splits=absent,
            annotation_files=copied,
            changed=[str(target) for target in changed],
        )
        target_of = {str(job.source): job.target for job in todo}
        with progress_bar(show_progress) as progress:
            task = progress.add_task(f"preparing {to}", total=len(todo), info="")
            # by default one encoder per core (each runs single-threaded)
            for result in _run(todo, settings, workers or available_cores()):
                if result.status == "prepared":
                    target = target_of[result.source]
                    add_verified(out, target, output_record(target))
                summary.add(result)
                failed = len(summary.unreadable) + len(summary.mismatched)
                progress.update(task, advance=1, info=f"{failed} failed" if failed else "")
    summary.seconds = time.perf_counter() - started
    return summary


def output_record(target: Path) -> dict | None:
    """What an output is now, as `VERIFIED` records it when verified: a video copy's size
    and modification time (ns), a frame folder's file count and total size (a stat per
    file); None where there is none."""
    try:
        if not target.is_dir():
            status = target.stat()
            return {"bytes": status.st_size, "mtime_ns": status.st_mtime_ns}
        with os.scandir(target) as entries:
            sizes = [entry.stat().st_size for entry in entries if entry.is_file()]
    except FileNotFoundError:
        return None
    return {"files": len(sizes), "bytes": sum(sizes)}


def read_verified(out: Path) -> dict[Path, dict]:
    """output path -> its record as verified (`VERIFIED`; a line cut short by a kill is
    skipped, and its output prepared again)."""
    records = {}
    path = out / VERIFIED
    if not path.is_file():
        return records
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
            records[out / entry.pop("output")] = entry
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return records


def _verified_line(out: Path, target: Path, record: dict) -> str:
    return json.dumps({"output": target.relative_to(out).as_posix(), **record}) + "\n"


def write_verified(out: Path, records: dict[Path, dict]) -> None:
    """`VERIFIED` rewritten to hold `records` (those still true), in path order."""
    lines = [_verified_line(out, target, records[target]) for target in sorted(records)]
    atomic_write_text(out / VERIFIED, "".join(lines))


def add_verified(out: Path, target: Path, record: dict) -> None:
    """A record appended to `VERIFIED` as its output is renamed into place (a kill between
    the two leaves an output without a record: prepared again by the rerun)."""
    with open(out / VERIFIED, "a", encoding="utf-8") as fh:
        fh.write(_verified_line(out, target, record))


def _check_out(out: Path, root: Path, videos: Path | None, settings: PrepareSettings) -> None:
    for flag, source in (("--root", root), ("--videos", videos)):
        if source is not None and out.is_relative_to(source):
            raise UserError(
                f"--out {out} is inside {flag} {source}; choose a folder outside it, so the "
                "prepared copy and the source stay apart."
            )
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; choose a new or empty folder.")
    marker = out / MARKER
    if marker.is_file():
        try:
            made = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(
                f"{marker} is not readable JSON ({exc}); choose another --out."
            ) from exc
        made.setdefault("to", "videos")  # written before frames existed
        _check_source(out, made, root, videos)
        if {k: made.get(k) for k in settings.to_json()} != settings.to_json():
            then = PrepareSettings(
                made.get("dataset"), made.get("short_side"), made.get("keyframe_every"), made["to"]
            )
            same_flags = then.flags() == settings.flags()
            raise UserError(
                f"--out {out} was prepared with "
                + (f"an older version ({marker})" if same_flags else then.flags())
                + "; rerun with those settings to resume, or choose another --out."
            )
        return
    if out.is_dir() and any(entry.name != LOCK for entry in out.iterdir()):
        raise UserError(
            f"--out {out} holds files but is not a folder prepare-videos wrote (no {MARKER}); "
            "choose a new or empty folder."
        )


def _source(root: Path, videos: Path | None) -> dict:
    """The source the marker records: `--root` as "source", `--videos` (or None)."""
    return {"source": str(root), "videos": None if videos is None else str(videos)}


def _check_source(out: Path, made: dict, root: Path, videos: Path | None) -> None:
    """Refuse a source other than the one `made` (the marker) records: another dataset's
    annotation files would replace the copy's while its videos stayed. A marker written
    before `--videos` was recorded holds only the root (`_write_marker` adds it)."""
    given = _source(root, videos)
    then = {key: made.get(key, given[key]) for key in given}
    if then != given:

        def flags(source: dict) -> str:
            shown = f"--root {source['source']}"
            return shown + (f" --videos {source['videos']}" if source["videos"] else "")

        raise UserError(
            f"--out {out} is a copy of {flags(then)}, not of {flags(given)}; rerun with "
            "that source to resume, or choose another --out."
        )


def _write_marker(out: Path, settings: PrepareSettings, root: Path, videos: Path | None) -> None:
    """Write the marker of a new copy, or record the source in one that lacks it."""
    marker = out / MARKER
    if not marker.is_file():
        atomic_write_json(marker, {**settings.to_json(), **_source(root, videos)})
        atomic_write_text(out / VERIFIED, "")
        return
    made = json.loads(marker.read_text(encoding="utf-8"))
    if any(key not in made for key in _source(root, videos)):
        atomic_write_json(marker, {**_source(root, videos), **made})


def plan_jobs(
    dataset: str,
    splits: Iterable[SplitList],
    root: Path,
    videos: Path | None,
    out: Path,
    to: str = "videos",
) -> list[VideoJob]:
    """One job per distinct video file of the splits, in path order, with its output path
    (for frames, the copy's path without its extension: its frame folder)."""
    sources = sorted({item.path for split in splits for item in split.items})
    targets = [output_path(dataset, path, root, videos, out) for path in sources]
    if to == "frames":
        targets = [target.with_name(folder_name(target.name)) for target in targets]
    return [VideoJob(path, target) for path, target in zip(sources, targets)]


def output_path(dataset: str, source: Path, root: Path, videos: Path | None, out: Path) -> Path:
    """Where the copy of `source` goes: its path relative to `root` under `out`, or for
    videos from `--videos`, relative to it under the layout's video folder of `out`."""
    entry = layout(dataset)
    if videos is None:
        base, home = root, out
    else:
        base, home = videos, out / (entry.video_dirs[0] if entry.video_dirs else "")
        if entry.flat_videos:
            return home / source.name
    if not source.is_relative_to(base):
        flag = "--root" if videos is None else "--videos"
        raise UserError(
            f"video {source} lies outside {flag} {base}; prepare-videos writes each video "
            f"at its path relative to {flag}, so pass --videos with a folder holding them all."
        )
    return home / source.relative_to(base)


def _layout_folders(
    dataset: str, splits: list[SplitList], root: Path, videos: Path | None
) -> list[str]:
    """Folders a layout needs under a root even when none of their videos could be
    prepared (relative to `out`): HMDB-51's class folders, Kinetics' split folders,
    the Charades and SSv2 video folders."""
    entry = layout(dataset)
    if entry.class_folders_needed:
        return list(splits[0].class_names) if splits else []
    if entry.split_folders:
        names = {d for s in splits for d in entry.split_folders[s.split]}
        return sorted(d for d in names if ((videos or root) / d).is_dir())
    if videos is not None:
        return list(entry.video_dirs[:1])
    return [d for d in entry.video_dirs if (root / d).is_dir()]


def annotation_files(dataset: str, root: Path, lists: ListFiles | None = None) -> list[str]:
    """The files under `root` a layout reads besides videos (relative, those present): the
    list files `lists` names too, where they lie under `root` (one elsewhere is named again,
    by the same flag, with `--root OUT`)."""
    entry = layout(dataset)
    lists = lists or ListFiles()
    named = [root / p for p in (lists.train, lists.test, lists.classes) if p is not None]
    candidates = [
        *entry.annotations,
        *(f for d in entry.annotation_dirs for f in _folder_files(root, d)),
        *(str(p.relative_to(root)) for p in named if p.is_relative_to(root)),
    ]
    return [name for name in dict.fromkeys(candidates) if (root / name).is_file()]


def _folder_files(root: Path, folder: str) -> list[str]:
    path = root / folder
    return (
        sorted(f"{folder}/{p.name}" for p in path.iterdir() if p.is_file()) if path.is_dir() else []
    )


def copy_annotations(
    dataset: str, root: Path, out: Path, lists: ListFiles | None = None
) -> list[str]:
    """Copy the layout's annotation files from `root` to `out` (each atomically)."""
    names = annotation_files(dataset, root, lists)
    for name in names:
        with atomic_path(out / name) as tmp:
            shutil.copyfile(root / name, tmp)
    return names


def _run(jobs: list[VideoJob], settings: PrepareSettings, workers: int) -> Iterator[VideoResult]:
    """Each job's result as it finishes: in this process with one worker, else in
    `workers` processes, with at most 2 x workers jobs submitted at a time."""
    prepare = _Prepare(settings.short_side, settings.keyframe_every, settings.to)
    if workers == 1 or len(jobs) <= 1:
        yield from map(prepare, jobs)
        return
    pending_jobs = iter(jobs)
    # one process per core already: torch's resize and JPEG encode stay on one thread each
    with ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)), initializer=torch.set_num_threads, initargs=(1,)
    ) as pool:
        try:
            running = {pool.submit(prepare, job) for job in islice(pending_jobs, 2 * workers)}
            while running:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                running |= {pool.submit(prepare, job) for job in islice(pending_jobs, len(done))}
                for future in done:
                    yield future.result()
        except BaseException:  # a full disk, Ctrl-C: stop without starting the queued jobs
            pool.shutdown(wait=False, cancel_futures=True)
            raise


@dataclass(frozen=True)
class _Prepare:
    """`prepare_video` with the settings bound (picklable for the worker processes)."""

    short_side: int
    keyframe_every: int
    to: str = "videos"

    def __call__(self, job: VideoJob) -> VideoResult:
        if self.to == "frames":
            return prepare_frames(job.source, job.target, self.short_side)
        return prepare_video(job.source, job.target, self.short_side, self.keyframe_every)


def partial_path(target: Path) -> Path:
    return target.with_name(f".{target.name}{PARTIAL}")


def prepare_video(
    source: Path, target: Path, short_side: int = 256, keyframe_every: int = 16
) -> VideoResult:
    """Re-encode one video to `target` through its partial file; verified, then renamed.

    An unreadable source (or one the encoder refuses) or a copy whose frame count differs
    from the source's by more than one frame is a result (the partial file removed); a copy
    that cannot be written (a full disk) is a UserError."""
    partial = partial_path(target)
    partial.unlink(missing_ok=True)  # a killed job's leftover
    try:
        reader, info = open_video(source)
        del reader
    except VideoError as exc:
        return VideoResult(str(source), "unreadable", exc.reason)
    try:
        partial.parent.mkdir(parents=True, exist_ok=True)
        _encode(source, partial, info.fps, short_side, keyframe_every)
        verdict = _verify(partial, info.num_frames)
        if verdict is not None:
            partial.unlink(missing_ok=True)
            return VideoResult(str(source), "mismatched", verdict)
        size = partial.stat().st_size
        os.replace(partial, target)
    except (VideoError, _EncodeError) as exc:
        partial.unlink(missing_ok=True)
        return VideoResult(str(source), "unreadable", exc.reason)
    except OSError as exc:  # writing the copy (the source's errors are _EncodeErrors)
        partial.unlink(missing_ok=True)
        raise UserError(f"could not write {target} ({os_reason(exc)}); rerun to resume.") from exc
    except av.error.FFmpegError as exc:  # the encoder refused this video
        partial.unlink(missing_ok=True)
        return VideoResult(str(source), "unreadable", f"cannot be re-encoded ({first_line(exc)})")
    return _prepared(source, info, size)


def prepare_frames(source: Path, target: Path, short_side: int = 256) -> VideoResult:
    """Write one video as the frame folder `target` through its partial folder; verified
    (the folder opens with the training reader and holds the source's frame count
    exactly), then renamed. An unreadable source, or one whose frames stop decoding, is a
    result (the partial folder removed); a folder that cannot be written is a UserError."""
    partial = partial_path(target)
    _remove(partial)  # a killed job's leftover
    try:
        reader, info = open_video(source)
        if min(info.height, info.width) > short_side:  # never scaled up
            info = resize_reader(reader, info, short_side)
    except VideoError as exc:
        return VideoResult(str(source), "unreadable", exc.reason)
    try:
        partial.mkdir(parents=True)
        size = _write_frames(reader, info.num_frames, partial)
        (partial / FPS_FILE).write_text(fps_text(info.fps), encoding="utf-8")
        verdict = _verify(partial, info.num_frames, exact=True)
        if verdict is not None:
            _remove(partial)
            return VideoResult(str(source), "mismatched", verdict)
        os.replace(partial, target)
    except VideoError as exc:
        _remove(partial)
        return VideoResult(str(source), "unreadable", exc.reason)
    except (OSError, RuntimeError) as exc:  # torchvision's write_file raises RuntimeError
        _remove(partial)
        reason = os_reason(exc) if isinstance(exc, OSError) else first_line(exc)
        raise UserError(f"could not write {target} ({reason}); rerun to resume.") from exc
    return _prepared(source, info, size)


def _prepared(source: Path, info: VideoInfo, size: int) -> VideoResult:
    """The result of a source prepared into `size` bytes (`info`: the source's VideoInfo)."""
    return VideoResult(
        str(source),
        "prepared",
        seconds=info.num_frames / info.fps if info.fps > 0 else 0.0,
        bytes_before=source.stat().st_size,
        bytes_after=size,
    )


FRAMES_PER_READ = 32  # consecutive frames decoded by one `read_frames` (sequential in decord)


def _write_frames(reader, num_frames: int, folder: Path) -> int:
    """Every frame of an opened video as JPEGs in `folder`; the bytes written."""
    written = 0
    for start in range(0, num_frames, FRAMES_PER_READ):
        frames = read_frames(reader, range(start, min(start + FRAMES_PER_READ, num_frames)))
        for index, frame in enumerate(frames, start):
            data = encode_jpeg(frame.permute(2, 0, 1), quality=JPEG_QUALITY)
            write_file(str(frame_file(folder, index)), data)
            written += data.numel()
    return written


def _remove(path: Path) -> None:
    """A partial output, a file or a folder, gone if there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


class _EncodeError(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def output_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) of a copy: the short side at most `short_side` (never scaled up),
    aspect kept, both even (H.264's 4:2:0 needs it)."""
    if min(height, width) > short_side:
        height, width = short_side_size(height, width, short_side)
    return max(2, height - height % 2), max(2, width - width % 2)


def _encode(source: Path, target: Path, fps: float, short_side: int, keyframe_every: int) -> None:
    """Write the copy of `source` to `target` (see the module's docstring).

    `fps` is the rate the training reader gives the source (the stream's average rate), so
    it gives the copy the same and seconds map to the same frames."""
    try:
        container = av.open(str(source))
    except av.error.FFmpegError as exc:
        raise _EncodeError(f"cannot be opened by PyAV ({first_line(exc)})") from exc
    with container:
        if not container.streams.video:
            raise _EncodeError("has no video stream")
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1  # one process per core already
        rate = Fraction(fps) if fps > 0 else stream.average_rate or stream.guessed_rate
        if not rate:
            raise _EncodeError("has no frame rate")
        rate = Fraction(rate).limit_denominator(100_000)  # 29.97002997... -> 30000/1001
        with av.open(str(target), mode="w", format="mp4") as copy:
            encoder = copy.add_stream("libx264", rate=rate)
            encoder.pix_fmt = "yuv420p"
            encoder.codec_context.thread_count = 1
            encoder.codec_context.gop_size = keyframe_every
            encoder.options = {
                "crf": str(CRF),
                "preset": PRESET,
                "tune": TUNE,
                "x264-params": f"keyint={keyframe_every}:min-keyint={keyframe_every}:scenecut=0",
            }
            count = 0
            for frame in _decoded(container, stream):
                if count == 0:
                    encoder.height, encoder.width = output_size(
                        frame.height, frame.width, short_side
                    )
                image = frame.reformat(
                    width=encoder.width,
                    height=encoder.height,
                    format="yuv420p",
                    interpolation="AREA",
                )
                image.pts, image.time_base = count, 1 / rate  # frame n at n / rate seconds
                # a source keyframe's type would force a keyframe here too (libx264 honours it)
                image.pict_type = PictureType.NONE
                for packet in encoder.encode(image):
                    copy.mux(packet)
                count += 1
            if count == 0:
                raise _EncodeError("has no frames PyAV can decode")
            for packet in encoder.encode():
                copy.mux(packet)


def _decoded(container, stream) -> Iterator:
    """The decoded frames of `stream`; a decoding failure as an _EncodeError."""
    try:
        yield from container.decode(stream)
    except av.error.FFmpegError as exc:
        raise _EncodeError(f"cannot be decoded by PyAV ({first_line(exc)})") from exc


def _verify(copy: Path, source_frames: int, exact: bool = False) -> str | None:
    """None when the training reader opens the copy and counts the source's frames (within
    one, or `exact`ly), else what differs."""
    try:
        reader, info = open_video(copy)
        del reader
    except VideoError as exc:
        return f"its copy cannot be read ({exc.reason})"
    if abs(info.num_frames - source_frames) > (0 if exact else 1):
        return f"its copy has {info.num_frames} frames, the source {source_frames}"
    return None


def print_summary(summary: PrepareSummary, say: Callable[[str], None]) -> None:
    """The summary as lines for `say` (the CLI's console)."""
    for name, what in summary.missing_splits.items():
        say(f"{name}: {what} not found, skipped")
    say(
        f"{summary.videos} videos: {summary.prepared} prepared now "
        f"({summary.hours:.2f} h of video), {summary.already_prepared} already prepared, "
        f"{len(summary.unreadable)} unreadable, {len(summary.mismatched)} mismatched; "
        f"{summary.missing} listed without a file"
    )
    if summary.prepared:
        ratio = summary.bytes_after / max(summary.bytes_before, 1)
        say(
            f"size of those prepared now: {summary.bytes_before / 2**20:.1f} MiB -> "
            f"{summary.bytes_after / 2**20:.1f} MiB ({ratio:.2f}x)"
        )
    for kind in ("unreadable", "mismatched"):
        reasons = getattr(summary, kind)
        lines = [f"{source}: {reasons[source]}" for source in sorted(reasons)]
        _say_listed(say, f"{kind} (not in the copy):", lines)
    _say_listed(say, "changed since they were verified (prepared again):", summary.changed)
    say(
        f"annotation files copied: {len(summary.annotation_files)}; "
        f"use --root {summary.out} (no --videos) ({summary.seconds:.0f} s)"
    )


def _say_listed(say: Callable[[str], None], title: str, lines: list[str], shown: int = 20) -> None:
    """`title` and the first `shown` of `lines`, indented, when there are any."""
    if lines:
        say(title)
    for line in lines[:shown]:
        say(f"  {line}")
    if len(lines) > shown:
        say(f"  ... and {len(lines) - shown} more (--json lists all)")
