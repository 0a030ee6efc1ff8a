"""The study end to end on a miniature design: every figure it reports comes from the runs it
trained, its cached assessment agrees with the trainer's own evaluation, and a rerun resumes
without training again."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from trainer.evaluation import evaluate_checkpoint
from trainer.model.aggregation import AGGREGATIONS
from trainer.storyworld import analysis
from trainer.storyworld.study import RunSpec, StudyDesign, run_specs, run_study, write_report

from .conftest import REPO

TINY = StudyDesign(
    seeds=(0, 1),
    videos_per_class_train=2,
    videos_per_class_test=1,
    objectives=("pooled",),
    clip_epochs=1,
    clip_frame_stride=6,
    views=1,
    epochs=1,
    batch_size=8,
    taus=(0.01, 1.0),
    temporal_modes=("mean",),
    finetune_objective="pooled",
    finetune_epochs=1,
    workers=0,
    posthoc_epochs=2,
)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    work = tmp_path_factory.mktemp("study")
    return work, run_study(TINY, work)


def test_every_run_of_the_design_is_trained_and_named_once():
    specs = list(run_specs(TINY, "pooled"))
    names = [s.name for s in specs]
    assert len(names) == len(set(names))
    assert len(specs) == 5 * 2 * 2 + 4 * 1 * 2 + 1 * 2 + 5 + 5 * 2
    assert sum(s.epochs == 2 for s in specs) == 5 * 2
    assert sum(s.finetune for s in specs) == len(AGGREGATIONS)
    assert list(run_specs(TINY, "pooled+tokens"))[-1].finetune is False  # fine-tune: one CLIP


def test_results_hold_the_keys_and_spreads_of_the_runs(study):
    work, results = study
    assert results["seeds"] == [0, 1] and results["test_videos_per_class"] == 1
    assert set(results["frame_caption_accuracy"]["pooled"]) == {"pooled", "word_tokens"}
    assert set(results["linear_probe"]["pooled"]) == {"train", "test"}
    runs = results["runs"]
    for mode in AGGREGATIONS:
        cells = results["top1"]["pooled"][mode]
        assert set(cells) == {"2shot", "supervised", "zero-shot"}
        for setting in ("2shot", "supervised"):
            values = [
                r["top1"]
                for r in runs
                if r["mode"] == mode
                and r["setting"] == setting
                and r["tau"] == 0.01
                and r["temporal_layers"] == 0
                and not r["finetune"]
                and r["epochs"] is None
            ]
            assert len(values) == 2
            assert cells[setting] == analysis.spread(values)
    shares = results["importance_on_action_frames"]["pooled"]
    assert 0.5 < shares["uniform"] < 1 and {"coarse", "fine", "global (coarse)"} <= set(shares)
    assert all(0 <= v <= 1 for v in shares.values())
    assert set(results["tau_sweep"]["pooled"]) == {"0.01", "1"}
    assert set(results["finetune_top1"]["pooled"]) == set(AGGREGATIONS)
    longer = results["posthoc_longer_training"]["pooled"]
    assert set(longer) == set(AGGREGATIONS) and longer["mean"]["top1"]["n"] == 2
    assert len(results["class_text_nearest_cosine"]["pooled"]) == 8
    anchored = results["text_anchored_probe"]["pooled"]
    assert anchored["zero_shot_test"] == pytest.approx(
        results["zero_shot_class_texts"]["pooled"]["seen"]
    )  # W = I is the frozen zero-shot
    kept = results["tpp_kept"]["pooled"]
    assert set(kept) == {"complement", "identity"} and len(kept["identity"]) == 12


def test_cached_assessment_agrees_with_the_engines_evaluation(study):
    """The study re-scores each last checkpoint on the cached test views; the trainer scored
    the same checkpoint during training. Both must give the same top-1."""
    _, results = study
    cached = [r for r in results["runs"] if not r["finetune"]]
    assert cached and all(r["top1"] == pytest.approx(r["engine_top1"]) for r in cached)
    assert all(r["n"] == 8 and r["steps"] >= 1 for r in cached)


def test_cached_test_views_give_the_metrics_of_the_videos(study):
    """The study reads every test view from its caches; decoding the videos instead
    (`trainer eval` without `--features`) gives the same seen and zero-shot top-1, and so
    does `eval --features` on the same caches."""
    work, results = study
    base = work / "pooled"
    (seen_texts,) = (base / "subtexts-complement-seen").glob("*/subtexts.parquet")
    (unseen_texts,) = (base / "subtexts-complement-unseen").glob("*/subtexts.parquet")
    fields = {f.name for f in dataclasses.fields(RunSpec)}
    chosen = [
        r
        for r in results["runs"]
        if not r["finetune"]
        and r["seed"] == 0
        and r["setting"] == "supervised"
        and r["epochs"] is None
        and r["tau"] == 0.01
        and r["temporal_layers"] == 0
    ]
    assert {r["mode"] for r in chosen} == set(AGGREGATIONS)
    for record in chosen:
        run_dir = work / "runs" / "pooled" / RunSpec(**{k: record[k] for k in fields}).name
        for world, texts, cache, key in (
            ("seen", seen_texts, "cache-seen", "top1"),
            ("unseen", unseen_texts, "cache-unseen", "zero_shot_top1"),
        ):
            common = dict(
                dataset="list",
                root=work / "world" / world,
                subtexts=texts,
                device="cpu",
                workers=0,
                show_progress=False,
                checkpoint="last",
            )
            from_videos = evaluate_checkpoint(run_dir, **common)
            from_cache = evaluate_checkpoint(run_dir, **common, features=base / cache)
            assert from_videos["top1"] == pytest.approx(record[key]), (record["mode"], world)
            assert from_cache["top1"] == pytest.approx(record[key]), (record["mode"], world)


def test_rerun_resumes_without_training_and_report_is_written(study, tmp_path):
    work, results = study
    checkpoint = next((work / "runs" / "pooled").glob("*/checkpoints/last.pt"))
    before = checkpoint.stat().st_mtime_ns
    again = run_study(TINY, work)
    assert checkpoint.stat().st_mtime_ns == before
    strip = ("seconds",)
    assert {k: v for k, v in again.items() if k not in strip} == {
        k: v for k, v in results.items() if k not in strip
    }
    notes = tmp_path / "notes.md"
    notes.write_text("## Findings\n\nhand-written\n")
    readme = write_report(results, tmp_path / "docs", notes)
    text = readme.read_text()
    assert "| aggregation | 2-shot (seen) |" in text and text.rstrip().endswith("hand-written")
    assert (tmp_path / "docs" / "top1.png").is_file() and (tmp_path / "docs" / "tau.png").is_file()
    stored = json.loads((tmp_path / "docs" / "results.json").read_text())
    assert stored["top1"] == results["top1"]
    assert np.isfinite(stored["top1"]["pooled"]["mean"]["supervised"]["mean"])


def test_cli_refuses_bad_seeds():
    done = subprocess.run(
        [sys.executable, "-m", "trainer", "study", "--seeds", "a,b"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and "--seeds must be comma-separated integers" in done.stderr
