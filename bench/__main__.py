"""`make bench`: every benchmark in one run, one file (bench/results.json), one table."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from storyboard_common.files import atomic_write_json

from .cache import bench_cache, bench_cache_ranks, bench_cache_views, bench_shard_crc
from .device_decode import bench_device_decode
from .loader import bench_loader
from .prepare import bench_frames_decode, bench_prepared_decode
from .steps import bench_steps
from .subtexts import bench_llm_concurrency, bench_tpp_scoring

RESULTS = Path(__file__).resolve().parent / "results.json"

# (key, target, higher is better)
TARGETS = {
    "tpp_text_tower_share": (0.80, True),
    "llm_concurrency_speedup": (8.0, True),
    "loader_vs_decode": (0.80, True),
    "step_overhead_coarse_fine_vs_mean": (0.05, False),
    "cache_speedup": (20.0, True),
    "cache_views_decode_speedup": (3.0, True),
    "prepared_decode_speedup": (4.0, True),
    "frames_vs_prepared_speedup": (5.0, True),
}


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    cores = len(os.sched_getaffinity(0))
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {cores} cores, {gpu}, torch {torch.__version__}"


def main() -> None:
    console = Console()
    results: dict[str, object] = {"machine": machine()}
    for name, bench in (
        ("TPP scoring", bench_tpp_scoring),
        ("LLM concurrency", bench_llm_concurrency),
        ("video loader", bench_loader),
        ("prepared videos", bench_prepared_decode),
        ("frame folders", bench_frames_decode),
        ("training steps", bench_steps),
        ("feature cache", bench_cache),
        ("feature cache, 2 ranks vs 1", bench_cache_ranks),
        ("feature cache, views per video", bench_cache_views),
        ("feature cache, shard CRC-32 check", bench_shard_crc),
        ("device decode hand-over", bench_device_decode),
    ):
        with console.status(f"benchmark: {name}"):
            results.update(bench())
    atomic_write_json(RESULTS, results)
    table = Table(title=f"make bench on {results['machine']}")
    for col in ("figure", "value", "target", "met"):
        table.add_column(col)
    for key, value in results.items():
        if not isinstance(value, float):
            continue
        target, higher = TARGETS.get(key, (None, True))
        met = "" if target is None else ("yes" if (value >= target) == higher else "NO")
        bound = "" if target is None else f"{'>=' if higher else '<='} {target}"
        table.add_row(key, f"{value:.3f}", bound, met)
    console.print(table)
    for key, value in results.items():
        if key.endswith("_setup"):
            console.print(f"{key}: {value}")
    console.print(f"written: {RESULTS}")


if __name__ == "__main__":
    main()
