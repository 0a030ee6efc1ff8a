"""A world's videos: which atomic action each frame shows (`plan_timeline`), the frames
drawn with numpy (`render`) and written as mpeg4 (`write_mp4`)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from storyboard_common.files import atomic_path

from .definition import UNRELATED_IDS

FPS = 8


# ----------------------------------------------------------------------------------------
# Timelines: which atomic action each frame shows.


def plan_timeline(actions: tuple[int, ...], frames: int, rng: np.random.Generator) -> list[dict]:
    """Segments `{"action", "start", "end"}` (end exclusive) covering `frames` frames.

    10-30% of the frames are unrelated (still / ball), split into 1-2 runs placed at random
    gaps of the sequence (before, between or after the class's actions); the remaining frames
    go to the class's actions with random, uneven durations (at least 2 frames each).
    """
    k = len(actions)
    n_unrelated = int(round(rng.uniform(0.10, 0.30) * frames))
    min_len = 2
    n_unrelated = max(1, min(n_unrelated, frames - min_len * k))
    n_action = frames - n_unrelated
    weights = rng.dirichlet(np.full(k, 1.5))
    spare = n_action - min_len * k
    lengths = min_len + np.floor(weights * spare).astype(int)
    for i in np.argsort(-weights)[: n_action - int(lengths.sum())]:
        lengths[i] += 1
    runs = 1 if n_unrelated < 4 else int(rng.integers(1, 3))
    run_lengths = [n_unrelated] if runs == 1 else [n_unrelated // 2, n_unrelated - n_unrelated // 2]
    gaps = sorted(rng.choice(k + 1, size=runs, replace=False).tolist())
    kinds = [int(rng.choice(UNRELATED_IDS)) for _ in range(runs)]

    segments: list[dict] = []
    t = 0

    def add(action: int, length: int) -> None:
        nonlocal t
        segments.append({"action": int(action), "start": t, "end": t + int(length)})
        t += int(length)

    for i in range(k + 1):
        for gap, kind, length in zip(gaps, kinds, run_lengths):
            if gap == i:
                add(kind, length)
        if i < k:
            add(actions[i], lengths[i])
    assert t == frames
    return segments


def per_frame(segments: list[dict]) -> list[int]:
    out: list[int] = []
    for s in segments:
        out += [s["action"]] * (s["end"] - s["start"])
    return out


# ----------------------------------------------------------------------------------------
# Drawing (numpy only). Each action's signature is held on every frame of its segment.

_RED = np.array([225.0, 30.0, 30.0])
_BASE_COLOURS = np.array([[40.0, 70.0, 200.0], [30.0, 150.0, 60.0], [120.0, 50.0, 170.0]])
_FLAG = np.array([250.0, 140.0, 0.0])
_POLE = np.array([60.0, 40.0, 30.0])
_BOX = np.array([140.0, 90.0, 40.0])
_BALL = np.array([230.0, 200.0, 40.0])


def _pose(action: int, p: float, half: float, big: float, lift: float) -> dict:
    """The square's shape on a frame of `action` at progress p in (0, 1]: half width, half
    height, rotation, height above the ground, and whether it is red."""
    pose = {"hw": half, "hh": half, "angle": 0.0, "lift": 0.0, "red": action == 6}
    if action == 1:  # in the air all along: a hop arc that never touches the ground
        pose["lift"] = lift * (0.55 + 0.45 * math.sin(math.pi * p))
    elif action == 2:  # squashed flat
        pose["hw"], pose["hh"] = half * 1.6, half * 0.45
    elif action == 3:  # tilted 30-60 degrees
        pose["angle"] = math.radians(30.0 + 30.0 * p)
    elif action == 4:
        pose["hw"] = pose["hh"] = half * big
    elif action == 5:
        pose["hw"] = pose["hh"] = half * 0.5
    return pose


def render(segments: list[dict], size: int, rng: np.random.Generator) -> np.ndarray:
    """Frames uint8 [T, size, size, 3] of the square acting out `segments`."""
    s = size / 64.0
    frames = segments[-1]["end"]
    ground = 46.0 * s
    half = rng.uniform(6.0, 8.0) * s
    big = rng.uniform(1.7, 1.9)
    lift = rng.uniform(12.0, 17.0) * s
    colour = _BASE_COLOURS[rng.integers(len(_BASE_COLOURS))] + rng.uniform(-20, 20, 3)
    red = _RED + rng.uniform(-10, 10, 3)
    tint = rng.uniform(170.0, 235.0, 3)
    floor = tint * rng.uniform(0.6, 0.8)
    # Where the square stands drifts at random: position means nothing here.
    x = rng.uniform(20.0, 44.0) * s
    velocity = rng.uniform(-0.8, 0.8) * s

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    background = np.empty((size, size, 3), np.float32)
    background[:] = tint
    background[int(ground) :] = floor
    video = np.empty((frames, size, size, 3), np.uint8)
    for seg in segments:
        a, n = seg["action"], seg["end"] - seg["start"]
        ball_dir = float(rng.choice((-1.0, 1.0)))
        for j in range(n):
            p = (j + 1) / n
            x += velocity
            if not 16.0 * s <= x <= 48.0 * s:
                velocity = -velocity
                x = float(np.clip(x, 16.0 * s, 48.0 * s))
            pose = _pose(a, p, half, big, lift)
            hw, hh = pose["hw"], pose["hh"]
            extent = math.hypot(hw, hh) if pose["angle"] else hh
            cy = ground - extent - pose["lift"]
            frame = background.copy()
            if pose["lift"]:  # a shadow on the ground under a square in the air
                shadow = ((xx - x) / (hw * 1.1)) ** 2 + ((yy - ground - 1.5 * s) / (1.5 * s)) ** 2
                frame[shadow <= 1] *= 0.55
            cos, sin = math.cos(pose["angle"]), math.sin(pose["angle"])
            u = (xx - x) * cos + (yy - cy) * sin
            v = -(xx - x) * sin + (yy - cy) * cos
            frame[(np.abs(u) <= hw) & (np.abs(v) <= hh)] = red if pose["red"] else colour
            top = cy - extent
            if a == 7:  # a pole from the square's top with a flag that flutters
                pole_top = top - 13.0 * s
                frame[(np.abs(xx - x) <= 0.8 * s) & (yy >= pole_top) & (yy <= top)] = _POLE
                tip = 8.0 * s * (0.8 + 0.2 * math.sin(2 * math.pi * p * 2))
                flag = (
                    (xx >= x)
                    & (xx <= x + tip)
                    & (np.abs(yy - pole_top - 3 * s) <= 3 * s * (1 - (xx - x) / max(tip, 1)))
                )
                frame[flag] = _FLAG
            elif a == 8:  # a box resting on the square
                box = 4.5 * s
                frame[(np.abs(xx - x) <= box) & (yy >= top - 2 * box) & (yy <= top)] = _BOX
            elif a == 9:  # a ball rolls across the scene, inside it on every frame
                bx = size / 2 + ball_dir * (p - 0.5) * (size - 12 * s)
                frame[(xx - bx) ** 2 + (yy - (ground - 4 * s)) ** 2 <= (4 * s) ** 2] = _BALL
            frame += rng.normal(0.0, 4.0, frame.shape).astype(np.float32)
            video[seg["start"] + j] = frame.clip(0, 255).astype(np.uint8)
    return video


def write_mp4(path: Path, frames: np.ndarray, fps: int = FPS) -> None:
    """Write uint8 [T, H, W, 3] frames as an mpeg4 video (atomically: `atomic_path`)."""
    import av

    height, width = frames.shape[1:3]
    with atomic_path(path, suffix=f".tmp{path.suffix}") as tmp, av.open(str(tmp), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"qscale": "2"}
        stream.thread_count = 1
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
