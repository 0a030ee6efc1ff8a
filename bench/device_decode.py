"""`--decode-device cuda`'s hand-over: what a loader worker passes the main process for an
8-frame training clip, its frames' JPEG bytes (and each view's drawn geometry) against the
decoded, cropped uint8 clip the CPU path passes; where CUDA is at hand, also how fast
`decode_clips` decodes and cuts a batch on the GPU and how far its pixels are from the CPU
decode's (nvJPEG against libjpeg-turbo)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from testkit.frame_folders import write_jpegs
from testkit.videos import write_kinetics_like
from trainer.data.dataset import ClipSpec, VideoClipDataset
from trainer.data.device_transforms import EncodedClips, decode_clips
from trainer.data.items import VideoItem
from trainer.data.video import open_video, read_frames, short_side_size

SHORT_SIDE = 256  # `prepare-videos --to frames`' default
QUALITY = 90  # the JPEG quality it writes


def frame_folder_of(video: Path, folder: Path, short_side: int = SHORT_SIDE) -> Path:
    """Every frame of `video`, short side `short_side`, as a frame folder."""
    reader, info = open_video(video)
    frames = read_frames(reader, range(info.num_frames)).permute(0, 3, 1, 2)
    size = short_side_size(info.height, info.width, short_side)
    return write_jpegs(folder, TF.resize(frames, list(size), antialias=True), QUALITY)


def bench_device_decode(videos: int = 1, frames: int = 8, epochs: int = 64) -> dict:
    """Bytes handed over per training clip (`frames` frames, 224-px views) from frame
    folders of the bench's Kinetics-like raw clips, JPEG bytes against the decoded clip, and
    how many such clips one worker process prepares a second (reading the bytes, the JPEG
    headers and drawing the views; one torch thread)."""
    with tempfile.TemporaryDirectory() as tmp:
        folders = [
            frame_folder_of(
                write_kinetics_like(Path(tmp) / f"raw{i}.mp4", seed=i), Path(tmp) / f"f{i}"
            )
            for i in range(videos)
        ]
        items = [VideoItem(f, f.name, (0,)) for f in folders]
        data = VideoClipDataset(items, 1, False, ClipSpec(frames=frames), encoded=True)
        data.views(0, [epochs])  # warm: imports, page cache
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        start = time.perf_counter()
        samples = [data.views(i, [e]) for i in range(videos) for e in range(epochs)]
        worker_rate = len(samples) / (time.perf_counter() - start)
        torch.set_num_threads(threads)
        clips: list[EncodedClips] = [s["jpegs"] for s in samples]
        handed = np.mean(
            [c.data.numel() + 8 * (c.lengths.numel() + c.slots.numel()) for c in clips]
        )
        decoded = frames * 3 * 224 * 224
        result = {
            "device_decode_bytes_per_clip": float(handed),
            "decoded_bytes_per_clip": float(decoded),
            "device_decode_handover_ratio": float(handed / decoded),
            "device_decode_worker_clips_per_second": worker_rate,
            "device_decode_setup": f"{videos} frame folder(s) of the bench's 640x360 clips at "
            f"short side {SHORT_SIDE} (455x256), JPEG quality {QUALITY}; {frames}-frame "
            f"training clips, {epochs} epochs each; decoded: uint8 {frames}x3x224x224",
        }
        if torch.cuda.is_available():
            result.update(_on_gpu(EncodedClips.join(clips)))
    return result


def _on_gpu(batch: EncodedClips, repeats: int = 5) -> dict:
    """`decode_clips` on the GPU: clips/s, and its pixels against the CPU's."""
    gpu = torch.device("cuda")
    on_cpu = decode_clips(batch, torch.device("cpu"))
    on_gpu = decode_clips(batch, gpu)  # also warms nvJPEG up
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        decode_clips(batch, gpu)
    torch.cuda.synchronize()
    difference = (on_gpu.cpu().int() - on_cpu.int()).abs()
    return {
        "device_decode_gpu_clips_per_second": len(batch) * repeats / (time.perf_counter() - start),
        "device_decode_gpu_max_pixel_difference": float(difference.max()),
        "device_decode_gpu_mean_pixel_difference": float(difference.float().mean()),
    }
