"""The input model of docs/scale.md: how many CPU cores a GPU needs to be kept fed.

A GPU trains `sustained TFLOP/s / training TFLOP per clip` clips a second (the compute model
of docs/scale.md: 4 forward passes a frame with gradient checkpointing); a loader worker
on one core delivers a clip rate that depends on what it reads. Their quotient is the
cores per GPU. Every figure is an estimate until `make gpu-check` has run on the card.
"""

from __future__ import annotations

# GFLOP of one 224-px forward pass per frame (docs/scale.md, "Compute").
FORWARD_GFLOP = {"ViT-B/16": 35.2, "ViT-L/14": 162.0}
TRAINING_PASSES = 4  # forward, recomputation, backward at twice the forward
# Sustained bf16 TFLOP/s: 40% of the dense peak (A100 312, H100 SXM 989), an assumed use.
SUSTAINED_TFLOPS = {"A100": 0.4 * 312, "H100": 0.4 * 989}
# 8-frame training clips a second on one core, by what the loader reads (low, high), as
# measured here (docs/benchmarks.md): raw 360p video and `prepare-videos` copies
# (`prepared_decode_speedup`); frame folders from a decode with the training crop under load
# (~50) to the reads alone (`frames_vs_prepared_speedup`: 79-107); with `--decode-device
# cuda` the workers only read bytes and draw the crops (`device_decode_worker_clips_per_second`:
# 141-204), the decode then costing GPU time, not cores.
CLIPS_PER_CORE = {
    "raw video": (2.9, 4.4),
    "prepared video": (14.0, 18.0),
    "frames": (50.0, 107.0),
    "frames, GPU decode": (141.0, 204.0),
}


def gpu_clips_per_s(model: str, frames: int, gpu: str) -> float:
    """Training clips a second one GPU computes (checkpointing on, bf16)."""
    tflop_per_clip = FORWARD_GFLOP[model] * TRAINING_PASSES * frames / 1000
    return SUSTAINED_TFLOPS[gpu] / tflop_per_clip


def cores_per_gpu(gpu_rate: float, per_core: float) -> float:
    """Loader cores that deliver `gpu_rate` clips/s at `per_core` clips/s each."""
    return gpu_rate / per_core


def _number(cores: float) -> str:
    return f"{cores:.1f}" if cores < 10 else f"{cores:.0f}"


def _cores(rate: float, per_core: tuple[float, float]) -> str:
    """The cores at the high per-core rate to those at the low one, e.g. "6.2-7.9"."""
    low, high = (_number(cores_per_gpu(rate, r)) for r in sorted(per_core, reverse=True))
    return low if low == high else f"{low}-{high}"


def cores_table(frames: int = 8) -> str:
    """docs/scale.md's table of cores per GPU, as Markdown."""
    header = ["model, GPU", "clips/s on the GPU", *(f"cores: {k}" for k in CLIPS_PER_CORE)]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model in FORWARD_GFLOP:
        for gpu in SUSTAINED_TFLOPS:
            rate = gpu_clips_per_s(model, frames, gpu)
            cells = [f"{model}, {frames} f, {gpu}", f"~{rate:.0f}"]
            cells += [_cores(rate, per_core) for per_core in CLIPS_PER_CORE.values()]
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(cores_table(), end="")
