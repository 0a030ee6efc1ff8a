"""The study end to end on a miniature design: every figure it reports comes from the runs it
trained, its cached assessment agrees with the trainer's own evaluation, and a rerun resumes
without training again."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from storyboard_common.subtexts import read_subtexts
from storyworld.study import analysis
from storyworld.study.collect import long_calibration_gains
from storyworld.study.design import (
    BRANCHES,
    DEMO_DESIGN,
    RunSpec,
    StudyDesign,
    figure_specs,
    next_episode_count,
    run_specs,
)
from storyworld.study.report import write_report
from storyworld.study.runner import run_study
from storyworld.study.tpp_groups import (
    count_groups,
    faithful_classes,
    group_names,
    group_sets,
    random_groups,
)
from storyworld.world.definition import default_world, subtext_pools
from testkit.cli import REPO, run_app
from trainer.evaluation import evaluate_checkpoint
from trainer.model.aggregation import AGGREGATIONS, ClassText, StoryboardHead

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
    calibration_taus=(0.003, 0.01, 0.03, 0.1),
    fewshot_episodes=2,
    episode_step=1,
    episode_cap=3,
    group_shares=(0.5,),
    random_groups=3,
    random_group_seeds=(0, 1),
    random_group_objectives=("pooled",),
    permutations=50,
    bootstraps=20,
    subtext_counts=(1, 2),
    count_seeds=(0,),
    long_epochs=2,
    long_taus=(),
)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    work = tmp_path_factory.mktemp("study")
    return work, run_study(TINY, work)


def test_every_run_of_the_design_is_trained_and_named_once():
    specs = list(run_specs(TINY, "pooled", (0.003, 0.03)))
    groups = [s for s in specs if s.group is not None]
    specs = [s for s in specs if s.group is None]
    names = [s.name for s in specs]
    assert len(names) == len(set(names)) + 2  # the main group's runs are the calibrated ones
    mode_grid = 5 * 2 * 2 + 4 * 2 * 2  # (supervised + 2-shot) x seeds, at 0.01 and calibrated
    assert len(set(names)) == mode_grid + 4 * 1 * 2 + 1 * 2 + 5 + 5 * 2
    assert len(groups) == len({s.name for s in groups}) == 8 * 2  # 9 groups, one the main
    assert {(s.mode, s.tau, s.tau_fine) for s in groups} == {("coarse+fine", 0.003, 0.03)}
    assert sum(s.epochs == 2 for s in specs) == 5 * 2
    assert sum(s.finetune for s in specs) == len(AGGREGATIONS)
    assert list(run_specs(TINY, "pooled+tokens"))[-1].finetune is False  # fine-tune: one CLIP
    assert not any(s.tau_fine for s in run_specs(TINY, "pooled"))  # not calibrated: 0.01 only


@pytest.mark.slow  # the miniature study fixture (about 2 minutes on 2 cores)
def test_results_hold_the_keys_and_spreads_of_the_runs(study):
    work, results = study
    assert results["seeds"] == [0, 1] and results["test_videos_per_class"] == 1
    assert set(results["frame_caption_accuracy"]["pooled"]) == {"pooled", "word_tokens"}
    assert set(results["linear_probe"]["pooled"]) == {"train", "test"}
    runs = results["runs"]
    episodes = results["fewshot_paired_differences"]["pooled"]["0.01"]["episodes"]
    assert episodes in (2, 3)  # 2, then 1 more while a half-width is over 0.03, up to 3
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
                and r["tau_fine"] is None
                and r["group"] is None
            ]
            assert len(values) == (2 if setting == "supervised" else episodes)
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


@pytest.mark.slow  # the miniature study fixture (about 2 minutes on 2 cores)
def test_calibration_and_spread_before_and_after_training(study):
    _, results = study
    cal = results["calibrated_tau"]["pooled"]
    for branch, target in (("coarse", 0.43), ("fine", 0.30)):
        assert cal[branch] == analysis.closest_tau(cal["taus"], cal[f"largest_{branch}"], target)
    spreads = results["importance_spread"]["pooled"]
    assert set(spreads) == {"0.01", "calibrated"}
    assert (spreads["calibrated"]["tau_coarse"], spreads["calibrated"]["tau_fine"]) == (
        cal["coarse"],
        cal["fine"],
    )
    for cell in spreads.values():
        assert set(cell["after"]) == {"global", "coarse", "fine", "coarse+fine"}
        assert cell["after"]["coarse+fine"]["fine"]["n"] == 2
    grid = dict(zip(cal["taus"], cal["largest_coarse"]))
    assert spreads["0.01"]["before"]["coarse"] == pytest.approx(grid[0.01])


def softmax_over_frames(scores: np.ndarray, tau: float) -> np.ndarray:
    """softmax along the last (frame) axis of scores / tau, in float64."""
    z = scores / tau
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_largest_weight_after_training_is_the_papers_equations_on_the_trained_head():
    """What the study reports as a trained run's largest frame weight (`largest_weight_*`:
    `own_class_weights` then `mean_largest_weight` of the head's weights, as `assess_run`
    takes them) against Eq. 8 and Eq. 10 computed here by hand in numpy from the frames and
    the class / sub-text word tokens, on heads whose every parameter is trained (random):
    `global` and `fine` with their own tau, `coarse` with its cross-attention at the
    identity; a trained cross-attention must change `coarse`'s weights. A wrong tau (the
    two differ), the wrong tokens (class vs sub-text) or a softmax over the wrong axis
    (C != L) fails it."""
    g = np.random.default_rng(0)
    torch.manual_seed(0)
    videos, classes, frames_per_video, n_sub, words, dim = 5, 3, 4, 2, 3, 8
    tau_coarse, tau_fine = 0.07, 0.3
    frames = g.normal(size=(videos, frames_per_video, dim))
    text = ClassText(
        global_emb=torch.tensor(g.normal(size=(classes, dim))).float(),
        global_tokens=torch.tensor(g.normal(size=(classes, words, dim))).float(),
        global_mask=torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=torch.bool),
        sub_emb=torch.tensor(g.normal(size=(classes, n_sub, dim))).float(),
        sub_tokens=torch.tensor(g.normal(size=(classes, n_sub, words, dim))).float(),
        sub_mask=torch.tensor(
            [[[1, 1, 0], [1, 1, 1]], [[1, 0, 0], [1, 1, 0]], [[1, 1, 1], [1, 0, 0]]],
            dtype=torch.bool,
        ),
    )
    labels = np.array([0, 2, 1, 2, 0])
    unit_frames = unit(frames)  # [V, L, D]

    # Eq. 8: per real class word a softmax over frames of cos / tau_coarse, averaged over words
    tokens, mask = unit(text.global_tokens.double().numpy()), text.global_mask.numpy()
    per_word = softmax_over_frames(np.einsum("cwd,vld->vcwl", tokens, unit_frames), tau_coarse)
    coarse = (per_word * mask[None, :, :, None]).sum(2) / mask.sum(1)[None, :, None]
    # Eq. 10: softmax over frames of the best sub-text's mean word cosine / tau_fine
    sub, sub_mask = unit(text.sub_tokens.double().numpy()), text.sub_mask.numpy()
    cos = np.einsum("cnwd,vld->vcnwl", sub, unit_frames)
    mean_cos = (cos * sub_mask[None, :, :, :, None]).sum(3) / sub_mask.sum(2)[None, :, :, None]
    fine = softmax_over_frames(mean_cos.max(axis=2), tau_fine)
    by_hand = {"coarse": coarse, "fine": fine}

    features = torch.tensor(frames).float()
    for mode in ("global", "coarse", "fine", "coarse+fine"):
        head = StoryboardHead(dim, mode, tau_coarse=tau_coarse, tau_fine=tau_fine)
        with torch.no_grad():  # "trained": every parameter but the cross-attention moved
            for name, param in head.named_parameters():
                if not name.startswith("cross_attention"):
                    param.add_(torch.randn(param.shape) * 0.5)
        with torch.no_grad():
            out = {k: v for k, v in head(features, text).items() if v is not None}
        for branch in {"coarse", "fine"} & set(out):
            weights = out[branch].double().numpy()
            np.testing.assert_allclose(weights, by_hand[branch], atol=1e-5)
            study = analysis.mean_largest_weight(analysis.own_class_weights(weights, labels))
            own = by_hand[branch][np.arange(videos), labels]  # [V, L]
            assert study == pytest.approx(own.max(axis=1).mean(), abs=1e-5)
        if head.cross_attention is not None:  # a trained cross-attention moves coarse's weights
            with torch.no_grad():
                for param in head.cross_attention.parameters():
                    param.add_(torch.randn(param.shape) * 0.5)
                moved = head(features, text)["coarse"].double().numpy()
            assert np.abs(moved - by_hand["coarse"]).max() > 1e-2


@pytest.mark.slow  # the miniature study fixture (about 2 minutes on 2 cores)
def test_paired_two_shot_differences_come_from_the_same_episodes(study):
    _, results = study
    runs = [r for r in results["runs"] if r["setting"] == "2shot" and r["tau"] == 0.01]
    runs = [r for r in runs if r["tau_fine"] is None]
    by_mode = {m: {r["seed"]: r["top1"] for r in runs if r["mode"] == m} for m in AGGREGATIONS}
    paired = results["fewshot_paired_differences"]["pooled"]
    assert paired["0.01"]["episodes"] == len(by_mode["coarse+fine"]) >= 2
    assert paired["0.01"]["differences"]["coarse+fine - mean"] == pytest.approx(
        analysis.paired_difference(by_mode["coarse+fine"], by_mode["mean"])
    )
    assert len(paired["calibrated"]["differences"]) == 10
    assert set(paired["calibrated - default tau"]["supervised"]) == {
        "global",
        "coarse",
        "fine",
        "coarse+fine",
    }


@pytest.mark.slow  # the miniature study fixture (about 2 minutes on 2 cores)
def test_tpp_groups_are_scored_and_trained_with_their_own_sub_texts(study):
    work, results = study
    groups = results["tpp_groups"]["pooled"]
    assert list(groups) == group_names(TINY.group_shares, 4)
    (main,) = (work / "pooled" / "subtexts-complement-seen").glob("*/subtexts.parquet")
    artifact = read_subtexts(main)
    for c, name in enumerate(artifact.class_names):  # the pool's scores = the main scoring's
        assert groups["tpp-complement"]["sets"][name] == list(artifact.sub_texts[c])
        assert groups["tpp-complement"]["tpp"]["complement"][name] == pytest.approx(
            artifact.tpp[c], rel=1e-5
        )
    for g in groups.values():
        assert g["top1"]["n"] == 2
        assert g["mean_tpp"]["identity"] == pytest.approx(
            np.mean(list(g["tpp"]["identity"].values()))
        )
    fits = results["tpp_accuracy_r2"]["pooled"]
    assert set(fits) == {"complement", "identity"} and fits["complement"]["n"] == len(groups)
    x = [g["mean_tpp"]["complement"] for g in groups.values()]
    y = [g["top1"]["mean"] for g in groups.values()]
    assert fits["complement"] == analysis.linear_fit(x, y)
    run = work / "runs" / "pooled"
    (config,) = run.glob("supervised-coarse_fine-*-seed0-*-unrelated/config.json")
    assert "groups/unrelated" in json.loads(config.read_text())["subtexts"]


@pytest.mark.slow  # the miniature study fixture (about 2 minutes on 2 cores)
def test_cached_assessment_agrees_with_the_trainers_logged_top1(study):
    """The study re-scores each last checkpoint on the cached test views; the trainer scored
    the same checkpoint during training. Both must give the same top-1."""
    _, results = study
    cached = [r for r in results["runs"] if not r["finetune"]]
    assert cached and all(r["top1"] == pytest.approx(r["logged_top1"]) for r in cached)
    assert all(r["n"] == 8 and r["steps"] >= 1 for r in cached)


@pytest.mark.slow  # the miniature study fixture (about 2 minutes on 2 cores)
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
        and r["tau_fine"] is None
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


@pytest.mark.slow  # the miniature study fixture (about 2 minutes on 2 cores)
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
    assert (tmp_path / "docs" / "tpp.png").is_file()
    cal = results["calibrated_tau"]["pooled"]
    assert f"tau_coarse = {cal['coarse']:g}" in text and f"tau_fine = {cal['fine']:g}" in text
    assert "| difference | tau 0.01 | calibrated |" in text
    assert "| coarse+fine - mean |" in text and "### TPP against accuracy" in text
    assert len([line for line in text.splitlines() if line.startswith("| 2-of-4-faithful |")]) == 1
    stored = json.loads((tmp_path / "docs" / "results.json").read_text())
    assert stored["top1"] == results["top1"]
    assert np.isfinite(stored["top1"]["pooled"]["mean"]["supervised"]["mean"])


def test_cli_refuses_bad_seeds():
    done = subprocess.run(
        [sys.executable, "-m", "storyworld", "study", "--seeds", "a,b"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and "--seeds must be comma-separated integers" in done.stderr


def test_storyworld_cli_prints_its_version_and_a_user_error_in_one_line(monkeypatch, capsys):
    """`python -m storyworld` runs through the shared CLI runner, in this process: `--version`
    like the other CLIs, a UserError as one `error:` line and exit status 2."""
    from storyboard_common.about import storyboard_version
    from storyworld.__main__ import app, main

    assert run_app(app, "--version") == (0, f"storyboard {storyboard_version()}\n", None)
    monkeypatch.setattr(sys, "argv", ["storyworld", "study", "--seeds", ","])
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 2
    assert capsys.readouterr().err == "error: --seeds names no seed.\n"


# ---------------------------------------------------------------- issue 22's pure pieces


def _shipped(classes):
    return {
        c: [
            [f"{c} step {i}" for i in range(4)],
            [f"other {c} {i}" for i in range(4)],
            [f"{c} step 0 again {i}" for i in range(4)],
        ]
        for c in classes
    }


def test_tpp_groups_follow_their_rules():
    classes = [f"class {i}" for i in range(8)]
    shipped = _shipped(classes)
    kept = {
        "complement": {c: ("faithful" if i % 2 else "unrelated") for i, c in enumerate(classes)},
        "identity": {c: "near-duplicate" for c in classes},
    }
    groups = group_sets(classes, shipped, kept, (0.25, 0.5, 0.75), seed=0)
    assert len(groups) >= 11 and list(groups) == group_names((0.25, 0.5, 0.75), 4)
    for kind, index in (("faithful", 0), ("unrelated", 1), ("near-duplicate", 2)):
        assert groups[kind] == {c: shipped[c][index] for c in classes}
    assert groups["tpp-identity"] == groups["near-duplicate"]
    assert [groups["tpp-complement"][c] == shipped[c][0] for c in classes] == [
        i % 2 == 1 for i in range(8)
    ]
    faithful_by_share = []
    for share, count in ((25, 2), (50, 4), (75, 6)):
        sets = groups[f"faithful-{share}%"]
        chosen = {c for c in classes if sets[c] == shipped[c][0]}
        assert len(chosen) == count
        assert all(sets[c] == shipped[c][1] for c in classes if c not in chosen)
        faithful_by_share.append(chosen)
    assert faithful_by_share[0] < faithful_by_share[1] < faithful_by_share[2]  # nested
    for c in classes:
        previous = set()
        for k in (1, 2, 3):
            texts = groups[f"{k}-of-4-faithful"][c]
            faithful = set(texts) & set(shipped[c][0])
            assert len(texts) == len(set(texts)) == 4 and len(faithful) == k
            assert set(texts) - faithful == set(shipped[c][1][: 4 - k])
            assert previous < faithful
            previous = faithful
    assert faithful_classes(classes, 0.5, 1) != faithful_classes(classes, 0.5, 0)  # seeded


def test_calibration_picks_the_tau_nearest_the_target_on_real_weights():
    gen = torch.Generator().manual_seed(0)
    features, labels = torch.randn(12, 4, 16, generator=gen), np.arange(12) % 3
    text = ClassText(
        global_emb=torch.randn(3, 16, generator=gen),
        global_tokens=torch.randn(3, 5, 16, generator=gen),
        global_mask=torch.ones(3, 5, dtype=torch.bool),
        sub_emb=torch.randn(3, 2, 16, generator=gen),
        sub_tokens=torch.randn(3, 2, 4, 16, generator=gen),
        sub_mask=torch.ones(3, 2, 4, dtype=torch.bool),
    )
    design = StudyDesign(calibration_taus=(0.01, 0.03, 0.1, 0.3, 1.0, 3.0))
    targets = dict(zip(BRANCHES, design.target_largest_weight))
    result = analysis.calibrate(design.calibration_taus, targets, features, labels, text)
    for branch, target in zip(("coarse", "fine"), (0.43, 0.30)):
        largest = result[f"largest_{branch}"]
        assert all(a > b for a, b in zip(largest, largest[1:]))  # softer with tau
        assert 0.25 < largest[-1] and largest[0] <= 1
        best = int(np.argmin([abs(w - target) for w in largest]))
        assert result[branch] == design.calibration_taus[best]
    assert analysis.closest_tau((0.1, 0.2), (0.5, 0.3), 0.4) == 0.1  # a tie: the smaller
    assert analysis.mean_largest_weight(np.full((3, 4), 0.25)) == 0.25
    assert analysis.mean_largest_weight(np.eye(4)[:2]) == 1.0


def test_linear_fit_and_paired_differences():
    fit = analysis.linear_fit([0.1, 0.2, 0.3, 0.4], [0.5, 0.4, 0.3, 0.2])
    assert fit["slope"] == pytest.approx(-1.0) and fit["r2"] == pytest.approx(1.0)
    noisy = analysis.linear_fit([1, 2, 3, 4], [1, 3, 2, 4])
    assert noisy["slope"] == pytest.approx(0.8) and noisy["r2"] == pytest.approx(0.64)
    assert analysis.linear_fit([1, 1], [0, 1])["r2"] is None
    first = {0: 0.50, 1: 0.70, 2: 0.40, 3: 0.60, 9: 0.1}
    second = {0: 0.45, 1: 0.66, 2: 0.34, 3: 0.56}
    paired = analysis.paired_difference(first, second)
    expected = analysis.spread([0.05, 0.04, 0.06, 0.04])  # episode 9 is unpaired
    assert paired == pytest.approx(expected)
    unpaired = analysis.spread([0.5, 0.7, 0.4, 0.6])["ci95"]
    assert paired["ci95"] < unpaired / 10  # the same episodes: most spread cancels


def test_sequential_episode_rule():
    assert next_episode_count(10, [0.02, 0.031], 0.03, 5, 25) == 15
    assert next_episode_count(10, [0.02, 0.03], 0.03, 5, 25) == 10
    assert next_episode_count(10, [None], 0.03, 5, 25) == 15
    assert next_episode_count(23, [0.2], 0.03, 5, 25) == 25
    assert next_episode_count(25, [0.2], 0.03, 5, 25) == 25


def test_demo_runs_every_mode_at_the_calibrated_pair_only():
    specs = list(run_specs(DEMO_DESIGN, "pooled+tokens"))
    assert len(specs) == len(AGGREGATIONS) * 2  # 2-shot and supervised, one seed
    assert {(s.tau, s.tau_fine, s.seed, s.group) for s in specs} == {(0.133352, 0.421697, 0, None)}
    assert DEMO_DESIGN.calibration_frames is None and not DEMO_DESIGN.tpp_groups


def test_random_groups_draw_items_from_the_pools_and_differ():
    world = default_world()
    pools = {c.name: subtext_pools(c, world) for c in world.seen}
    for c in world.seen:  # faithful: every action's caption first, in the class's order
        captions = [world.actions[a].caption for a in c.actions]
        assert pools[c.name]["faithful"][: len(captions)] == captions
        assert not set(pools[c.name]["faithful"]) & set(pools[c.name]["unrelated"])
    groups = random_groups(pools, 32, 4, seed=31)
    assert list(groups) == [f"random-{g:02d}" for g in range(32)]
    signatures = {tuple(frozenset(t) for t in sets.values()) for sets in groups.values()}
    assert len(signatures) == 32  # no two groups the same
    kinds_seen = set()
    for sets in groups.values():
        for c, texts in sets.items():
            assert len(texts) == len(set(texts)) == 4
            kinds = {k for t in texts for k, pool in pools[c].items() if t in pool}
            kinds_seen |= kinds
            assert all(any(t in pool for pool in pools[c].values()) for t in texts)
    assert kinds_seen == {"faithful", "unrelated", "near-duplicate"}
    assert random_groups(pools, 32, 4, seed=31) == groups  # seeded
    counts = count_groups({c: p["faithful"] for c, p in pools.items()}, range(1, 7))
    for c in pools:
        assert [len(counts[f"faithful-n{n}"][c]) for n in range(1, 7)] == list(range(1, 7))
        assert counts["faithful-n6"][c][:3] == counts["faithful-n3"][c]  # nested
    with pytest.raises(ValueError, match="shorter than 9"):
        count_groups({"a": ["x"] * 8}, [9])


def test_the_figure_runs_are_the_registered_grid():
    design = StudyDesign()
    pair = (0.13, 0.42)
    token = list(figure_specs(design, "pooled+tokens", pair, last=False))
    pooled_last = list(figure_specs(design, "pooled", pair, last=True))
    random_runs = [s for s in token if s.group and s.group.startswith("random-")]
    assert len(random_runs) == 32 * 5 * 2 == len(pooled_last)
    assert {(s.tau, s.tau_fine) for s in random_runs} == {(0.01, None), (0.13, 0.42)}
    counts = [s for s in token if s.group and s.group.startswith("faithful-n")]
    assert len(counts) == 6 * 5 and {(s.tau, s.tau_fine) for s in counts} == {(0.13, 0.42)}
    longer = [s for s in token if s.epochs == 90]
    assert len(longer) == (1 + 4 * 3) * 3
    assert {s.tau for s in longer if s.mode == "mean"} == {0.01}
    assert len({s.name for s in token}) == len(token)  # run folders are per CLIP
    assert {s.name for s in pooled_last} == {s.name for s in random_runs}
    assert not list(figure_specs(design, "pooled", None, last=False))  # no calibration


@pytest.mark.slow  # the miniature study fixture (about 2 minutes on 2 cores)
def test_figure_results_come_from_their_runs(study):
    work, results = study
    test = results["tpp_rank_test"]["pooled"]
    assert len(test["groups"]) == 3 and set(test["cells"]) == {"0.01", "calibrated"}
    for cell in test["cells"].values():
        names = list(cell["top1_by_seed"])
        matrix = np.asarray([[cell["top1_by_seed"][n][s] for s in (0, 1)] for n in names])
        for name, key in (("tpp_complement", None), ("sigma", "mean_sigma")):
            x = [
                test["groups"][n]["mean_tpp"]["complement"]
                if key is None
                else test["groups"][n][key]
                for n in names
            ]
            again = analysis.rank_correlation_test(x, matrix, 50, 20, TINY.random_group_seed)
            assert cell["tests"][name] == again
    (artifact,) = (work / "pooled" / "figures" / "groups" / "random-00").glob("*/subtexts.parquet")
    texts = read_subtexts(artifact)
    for c, name in enumerate(texts.class_names):  # each group trains on its own sets
        assert list(texts.sub_texts[c]) == test["groups"]["random-00"]["sets"][name]
    counts = results["subtext_count"]["pooled"]
    assert list(counts) == ["faithful-n1", "faithful-n2"]
    assert counts["faithful-n1"]["mean_delta"] == pytest.approx(1.0)  # one item: no overlap
    assert counts["faithful-n2"]["top1"]["n"] == 1
    keyframe = results["keyframe"]["pooled"]["0.01"]
    per_seed = keyframe["by_seed"]
    assert set(map(int, per_seed)) == {0, 1}
    assert keyframe["over_seeds"]["mean"] == pytest.approx(
        np.mean([v["mean"] for v in per_seed.values()])
    )
    longer = results["long_training"]["pooled"]
    assert set(longer["0.01"]) == set(AGGREGATIONS) and "calibrated" in longer
    assert longer["0.01"]["coarse"]["longer_minus_design"]["n"] == 2
    gains = long_calibration_gains(results, "pooled")  # from the run records alone
    assert set(gains) == {"global", "coarse", "fine", "coarse+fine"}
    assert all(g["n"] == 2 for g in gains.values())
    parts = results["provenance"]
    assert {"grid", "references", "figures", "figures, last CLIP"} <= set(parts)
    assert all(len(p["commits"]) >= 1 for p in parts.values())
