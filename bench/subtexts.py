"""Stage-one benchmarks: TPP scoring throughput and LLM request concurrency."""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

from storyboard_common.classes import ClassList
from storyboard_common.clip import load_clip
from storyboard_common.files import atomic_write_json
from subtext_gen.generate import generate
from subtext_gen.llm.files import FileBackend
from subtext_gen.llm.openai_chat import OpenAIBackend
from subtext_gen.prompts import select_prompts
from subtext_gen.score import score
from testkit.openai_server import OpenAIServer, Reply, good_replies

WORDS = (
    "raise lift lower swing bend turn grab hold push pull step jump reach kick throw catch "
    "arm leg hand foot head ball bar rope cup brush door floor chair slowly quickly up down "
    "left right forward back over under"
).split()


def _phrase(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7)))


def bench_tpp_scoring(
    classes: int = 40, sets: int = 8, n: int = 4, clip_model: str = "ViT-B-16", device: str = "auto"
) -> dict:
    """Candidate sets scored per second, and the share of the time spent in the text tower.

    ViT-B-16's architecture with random weights: the text tower costs what the real one does.
    """
    rng = random.Random(0)
    names = tuple(f"action_{i}" for i in range(classes))
    data = {name: [[_phrase(rng) for _ in range(n)] for _ in range(sets)] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "sets.json"
        atomic_write_json(src, data, indent=None)
        generate(
            ClassList("bench", names), FileBackend(src), Path(tmp) / "art", n, show_progress=False
        )
        clip = load_clip(clip_model, "none", device)
        summary = score(Path(tmp) / "art", clip)
    return {
        "tpp_sets_per_second": summary.scored / summary.seconds,
        "tpp_text_tower_share": summary.text_tower_seconds / summary.seconds,
        "tpp_setup": f"{classes} classes x {sets} sets x {n} sub-texts, {clip_model} "
        f"(random weights) on {clip.device}",
    }


def bench_llm_concurrency(requests: int = 128, latency: float = 0.1, concurrency: int = 16) -> dict:
    """Generation against a loopback server with injected latency: sequential vs concurrent."""

    def slow(request: dict, call: int) -> Reply:
        reply = good_replies(request, call)
        reply.delay = latency
        return reply

    prompts = select_prompts(None)
    classes = ClassList("bench", tuple(f"action {i}" for i in range(requests // len(prompts))))
    seconds = {}
    with OpenAIServer(slow) as server:
        for jobs in (1, concurrency):
            backend = OpenAIBackend(
                "bench", base_url=server.base_url, api_key="bench", concurrency=jobs
            )
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                summary = generate(classes, backend, Path(tmp), 4, prompts, 1, show_progress=False)
                seconds[jobs] = time.perf_counter() - start
                assert summary.ok == len(classes) * len(prompts), summary
    return {
        "llm_sequential_seconds": seconds[1],
        "llm_concurrent_seconds": seconds[concurrency],
        "llm_concurrency_speedup": seconds[1] / seconds[concurrency],
        "llm_setup": f"{len(classes) * len(prompts)} requests, {latency * 1000:.0f} ms latency, "
        f"--concurrency {concurrency} vs 1",
    }
