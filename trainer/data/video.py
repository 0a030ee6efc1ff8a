"""The one video reader of the project: decord, opened once, only the sampled frames decoded;
a frame folder (`trainer/data/frames.py`) where a video file would be is read through the
same functions, its sampled JPEGs decoded with torchvision on the CPU.

Why the resize happens in torch and not in decord: decord can scale on decode (its
`width`/`height` arguments), but it cannot keep the aspect ratio by itself and exposes no
way to learn the native size without decoding a frame, so resize-on-decode means opening
each file twice. Measured on CPU time (8 TSN frames, 320x240 to 1280x720, mpeg4 and
H.264), one native open plus a torchvision uint8 resize of just the returned frames was
never slower than probe-then-reopen, and on par with decord scaling even when the native
size was already known; so the file is opened once and `read_frames` resizes.
Learning the native size from the first frame costs almost nothing: that frame starts the
first group of pictures, which the first sampled frame needs decoded anyway.

`num_threads=1` by default: DataLoader workers are processes already, and decoder
threads on top of them only oversubscribe the cores.

decord's noise stays off stderr: its FFmpeg is set quiet (`decord.logging`), and the line
decord itself prints for a file it cannot open ("[12:00:00] .../video_reader.cc:83: ERROR
opening: <path>, Invalid data found when processing input"), which no setting reaches, is
caught while the file is opened and becomes the VideoError's reason.
"""

from __future__ import annotations

import os
import re
import stat
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import decord
import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.io import ImageReadMode, decode_jpeg

from storyboard_common.errors import UserError, first_line
from storyboard_common.files import os_reason

from .frames import (
    FPS_FILE,
    FRAME_TEMPLATE,
    first_gap,
    frame_file,
    jpeg_size,
    list_frames,
    read_fps,
    read_frame_bytes,
)


class VideoError(UserError):
    """A video (or frame folder) that cannot be opened or decoded, is empty, or is shorter
    than needed.

    The message names the file or folder (`noun`: "video" or "frame folder") and the
    reason, so a data loader can log it and skip the item, and a CLI can print it as one
    sentence.
    """

    def __init__(self, path: str | Path, reason: str, noun: str = "video"):
        super().__init__(f"{noun} {path} {reason}")
        self.path = str(path)
        self.reason = reason
        self.noun = noun

    def __reduce__(self):
        # DataLoader workers pickle exceptions; the default would call __init__(message).
        return (type(self), (self.path, self.reason, self.noun))

    @classmethod
    def too_short(cls, path: str | Path, have: int, need: int, noun: str = "video") -> VideoError:
        """The uniform message for a video (or interval) with fewer frames than sampled."""
        return cls(path, f"has {have} frames, fewer than {need}", noun)


FOLDER = "frame folder"


@dataclass(frozen=True)
class VideoInfo:
    """What a sampler needs to know about a video; height/width are those of returned frames."""

    num_frames: int
    fps: float
    height: int
    width: int


class VideoReader(decord.VideoReader):
    """A decord reader that remembers its file and the frame size `read_frames` returns."""

    path: str
    output_size: tuple[int, int] | None  # (height, width) to resize to; None keeps native


@dataclass
class FrameFolderReader:
    """A frame folder opened by `open_video`: the same `len`, `path` and `output_size`."""

    path: str
    num_frames: int
    output_size: tuple[int, int] | None = None

    def __len__(self) -> int:
        return self.num_frames


def short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) with the shorter side equal to `short_side`, aspect ratio kept.

    The longer side is truncated the way torchvision's `resize(img, short_side)` does, so
    frames resized here match what a `Resize(short_side)` transform would produce.
    """
    if short_side < 1:
        raise ValueError(f"short_side must be at least 1, not {short_side}")
    if height <= width:
        return short_side, max(1, int(short_side * width / height))
    return max(1, int(short_side * height / width)), short_side


# decord hands out an RGB frame without copying when its row stride (bytes per row) is a
# multiple of the width, and then reads the stride as width x channels: with padded rows the
# frame comes out [H, W, stride / W], and `get_batch` fails ("Check failed: from_size ==
# to_size"). Its FFmpeg (4.1) pads rows to 3 * (width rounded up to 32) bytes, so exactly the
# widths 1, 2, 3, 4, 6, 8, 12, 16, 24, 48 and 72 px fail, whatever the height (measured with
# decord 0.6.0 on every width 1..399; tests/trainer/data/test_video.py keeps the list
# honest). The first frame's shape shows it, so `open_video` refuses such a video with this reason.
_BATCH_WIDTH = (
    "is {width} px wide, a width decord cannot batch-decode (widths 1-4, 6, 8, 12, 16, 24, 48 "
    "and 72 px fail); re-encode it wider"
)


# FFmpeg's own messages (e.g. "moov atom not found"): decord sets them to ERROR on import;
# a file that fails is reported by the VideoError.
decord.logging.set_level(decord.logging.QUIET)

# decord's LOG(ERROR) line for a file FFmpeg cannot open: written by C++ straight to file
# descriptor 2 whatever the log level, the reason (av_strerror) after the last ", ".
_OPENING_LINE = re.compile(rb"^\[[\d:]+\] \S+: ERROR opening: .*, ([^\n]*)\n?", re.M)
# While a file is opened, descriptor 2 points at a temporary file: one open at a time, and
# what other threads write meanwhile is passed on afterwards (an open is a few
# milliseconds, a small part of a probe's decode).
_STDERR_LOCK = threading.Lock()


@contextmanager
def _decord_log_caught() -> Iterator[list[str]]:
    """Keep decord's "ERROR opening" lines off stderr: yields a list that receives their
    reasons when the block ends; anything else written to stderr meanwhile is passed on."""
    reasons: list[str] = []
    with _STDERR_LOCK, tempfile.TemporaryFile() as caught:
        if sys.stderr is not None:
            sys.stderr.flush()  # what was written before goes out before
        try:
            saved = os.dup(2)
        except OSError:  # no stderr to keep clean
            yield reasons
            return
        os.dup2(caught.fileno(), 2)
        try:
            yield reasons
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            text = caught.read()
            reasons.extend(m.decode(errors="replace") for m in _OPENING_LINE.findall(text))
            rest = _OPENING_LINE.sub(b"", text)
            if rest:
                with open(2, "wb", closefd=False) as stderr:
                    stderr.write(rest)


def open_video(
    path: str | Path,
    short_side: int | None = None,
    num_threads: int = 1,
    min_frames: int = 1,
) -> tuple[VideoReader, VideoInfo]:
    """Open a video for sparse frame reading; VideoError if it is unusable.

    With `short_side`, `read_frames` returns frames whose shorter side is `short_side`
    (aspect ratio kept) and the returned info gives that size; otherwise the native size.
    `min_frames` turns a video with fewer frames into a VideoError ("has 5 frames, fewer
    than 8"). Opening decodes the first frame, which also proves the stream decodes, and
    shows a frame width decord cannot batch-decode (see `_BATCH_WIDTH`).
    """
    path = Path(path)
    try:
        status = path.stat()
    except (FileNotFoundError, NotADirectoryError) as error:
        raise VideoError(path, "does not exist") from error
    except OSError as error:
        raise VideoError(path, f"cannot be read ({os_reason(error)})") from error
    if stat.S_ISDIR(status.st_mode):
        return open_frame_folder(path, short_side, min_frames)
    if not stat.S_ISREG(status.st_mode):  # a FIFO would block the reader's open() forever
        raise VideoError(path, "is not a regular file")
    if status.st_size == 0:
        raise VideoError(path, "has no frames (the file is empty)")
    failure = None
    with _decord_log_caught() as logged:
        try:
            reader = VideoReader(str(path), num_threads=num_threads)
        except Exception as error:  # decord raises DECORDError, RuntimeError and more
            failure = error
    if isinstance(failure, AssertionError):  # decord asserts a positive frame count
        raise VideoError(path, "has no frames") from failure
    if failure is not None:  # FFmpeg's reason where decord logged one, else its exception's
        reason = logged[-1] if logged else _library_reason(failure)
        raise VideoError(path, f"cannot be opened ({reason})") from failure
    num_frames = len(reader)
    try:
        first = reader.next()
        fps = float(reader.get_avg_fps())
    except StopIteration as error:
        raise VideoError(path, "has no frames") from error
    except Exception as error:
        raise VideoError(path, f"cannot be decoded ({_library_reason(error)})") from error
    height, width = first.shape[:2]
    if first.shape[2:] != (3,):
        raise VideoError(path, _BATCH_WIDTH.format(width=width))
    if num_frames < min_frames:
        raise VideoError.too_short(path, num_frames, min_frames)
    reader.path = str(path)
    reader.output_size = None
    return reader, resize_reader(reader, VideoInfo(num_frames, fps, height, width), short_side)


def resize_reader(reader, native: VideoInfo, short_side: int | None) -> VideoInfo:
    """Set an opened reader's `output_size` for `short_side` (as `open_video(path,
    short_side)` does, without opening it again); the info of the frames it returns."""
    if short_side is None:
        return native
    size = short_side_size(native.height, native.width, short_side)
    if size == (native.height, native.width):
        return native
    reader.output_size = size
    return VideoInfo(native.num_frames, native.fps, *size)


def open_frame_folder(
    path: Path, short_side: int | None = None, min_frames: int = 1
) -> tuple[FrameFolderReader, VideoInfo]:
    """`open_video` for a frame folder: counts its frames (one scandir), refuses a video
    file or a gap, reads the size from the first frame's JPEG header and the rate from its
    FPS_FILE (0 when it has none); a VideoError naming the folder for any of these."""
    try:
        numbers = list_frames(path)
        fps = read_fps(path)
    except NotADirectoryError as error:  # a file where a folder was wanted (not open_video's)
        raise VideoError(path, "is a video file, not a frame folder") from error
    except OSError as error:
        raise VideoError(path, f"cannot be read ({os_reason(error)})", FOLDER) from error
    except ValueError as error:
        raise VideoError(path, f"has a bad {FPS_FILE} ({error})", FOLDER) from error
    if not numbers:
        raise VideoError(path, f"has no frames (no {FRAME_TEMPLATE.format(1)})", FOLDER)
    gap = first_gap(numbers)
    if gap is not None:
        raise VideoError(
            path,
            f"has a gap: {FRAME_TEMPLATE.format(gap)} is missing before "
            f"{FRAME_TEMPLATE.format(numbers[-1])}",
            FOLDER,
        )
    if len(numbers) < min_frames:
        raise VideoError.too_short(path, len(numbers), min_frames, FOLDER)
    first = read_folder_bytes(path, [0])[0]
    size = jpeg_size(memoryview(first.numpy()))
    if size is None:
        raise VideoError(
            path, f"has a first frame that is not a JPEG ({frame_file(path, 0).name})", FOLDER
        )
    reader = FrameFolderReader(str(path), len(numbers))
    return reader, resize_reader(reader, VideoInfo(len(numbers), fps or 0.0, *size), short_side)


def read_folder_bytes(folder: Path, indices: Sequence[int]) -> list[torch.Tensor]:
    """The encoded frames at `indices` of a frame folder; a VideoError naming the folder."""
    try:
        return read_frame_bytes(folder, indices)
    except (OSError, RuntimeError) as error:  # torchvision's read_file raises RuntimeError
        raise VideoError(
            folder, f"has an unreadable frame ({_library_reason(error)})", FOLDER
        ) from error


def _decode_folder_frames(reader: FrameFolderReader, indices: list[int]) -> torch.Tensor:
    """The JPEGs at `indices` decoded on the CPU (torchvision, RGB), each distinct frame
    once: uint8 [T, H, W, 3]."""
    distinct = list(dict.fromkeys(indices))
    decoded: dict[int, torch.Tensor] = {}
    for index, data in zip(distinct, read_folder_bytes(Path(reader.path), distinct)):
        name = frame_file(reader.path, index).name
        try:
            image = decode_jpeg(data, mode=ImageReadMode.RGB)
        except RuntimeError as error:
            raise VideoError(
                reader.path,
                f"has a frame that cannot be decoded ({name}: {_library_reason(error)})",
                FOLDER,
            ) from error
        first = decoded.get(distinct[0], image)
        if image.shape != first.shape:
            raise VideoError(
                reader.path,
                f"has frames of different sizes ({name} is {_wxh(image)}, "
                f"{frame_file(reader.path, distinct[0]).name} {_wxh(first)})",
                FOLDER,
            )
        decoded[index] = image
    # decode_jpeg's [3, H, W] is a view of [H, W, 3] pixels: stacked as those, one plain
    # copy gives the video reader's contiguous [T, H, W, 3] (stacking [3, H, W] would
    # transpose every byte: measured 6.5 ms against 0.02 ms a 455x256 frame)
    return torch.stack([decoded[i].permute(1, 2, 0) for i in indices])


def _library_reason(error: Exception) -> str:
    """decord's or torchvision's message without the library's own source locations, which
    name files of its build machine (`[22:55:42] /github/workspace/src/video/
    video_reader.cc:151: Check failed: st_nb >= 0 (-1 vs. 0) ERROR cannot find ...`,
    `decode_jpeg, <file>:171, ...`): what is left says what failed."""
    message = str(error).strip()
    cleaned = _SOURCE_LOCATION.sub("", message)
    return first_line(RuntimeError(cleaned)) if cleaned else first_line(error)


# decord: one or more "[time] file:line: " prefixes and a failed check's condition and
# values; torchvision: "function, file:line, " before its message.
_SOURCE_LOCATION = re.compile(
    r"^(?:(?:\[[\d:]+\] \S+:\d+: )+(?:Check failed: .*?\(\S+ vs\. \S+\) (?:ERROR )?)?"
    r"|\w+, \S+:\d+, )"
)


def _wxh(image: torch.Tensor) -> str:  # [3, H, W]
    return f"{image.shape[2]}x{image.shape[1]}"


def read_frames(reader: VideoReader | FrameFolderReader, indices: Sequence[int]) -> torch.Tensor:
    """Decode only the frames at `indices` (any order, repeats allowed): uint8 [T, H, W, 3].

    A frame folder's JPEGs are read once per distinct frame and decoded one by one. decord
    seeks to the key frame before each requested frame and decodes from there, so the cost
    follows the sampled frames, not the video length. An index outside the video
    is a caller bug (IndexError); a frame that fails to decode is a VideoError.
    """
    wanted = np.asarray(indices, dtype=np.int64).reshape(-1)
    path = getattr(reader, "path", "<unknown>")
    if wanted.size == 0:
        raise ValueError("read_frames needs at least one frame index")
    if wanted.min() < 0 or wanted.max() >= len(reader):
        raise IndexError(
            f"frame indices {wanted.min()}..{wanted.max()} outside video {path} "
            f"of {len(reader)} frames"
        )
    if isinstance(reader, FrameFolderReader):
        frames = _decode_folder_frames(reader, wanted.tolist())
    else:
        try:
            frames = torch.from_numpy(reader.get_batch(wanted.tolist()).asnumpy())
        except Exception as error:
            raise VideoError(path, f"cannot be decoded ({_library_reason(error)})") from error
    size = getattr(reader, "output_size", None)
    if size is None:
        return frames
    # [T, H, W, 3] viewed as channels-last [T, 3, H, W]: torch's fast uint8 antialiased
    # path, and the result permutes back to a contiguous [T, H, W, 3] without a copy.
    resized = TF.resize(frames.permute(0, 3, 1, 2), list(size), antialias=True)
    return resized.permute(0, 2, 3, 1)


def video_info(path: str | Path) -> VideoInfo:
    """Native frame count, fps and size of a video (for scanning a dataset); VideoError if bad.

    Costs one open (decord indexes the packets) and one decoded frame.
    """
    reader, info = open_video(path)
    del reader
    return info
