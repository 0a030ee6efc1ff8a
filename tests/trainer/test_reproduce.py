"""`trainer reproduce`: rows as data, the runs a row plans, a row run end to end over the tiny
list world (and resumed after a crash: finished runs are read, not retrained), the interval
by hand, and docs/reproduce.md's tables as `--list` computes them."""

import json
import math

import pytest
import yaml

from testkit.cli import REPO, run_app
from testkit.list_runs import run_config
from trainer import reproduce
from trainer.__main__ import app
from trainer.report import read_metrics


def test_the_shipped_rows_plan_the_papers_protocol(tmp_path):
    rows = reproduce.load_rows()
    assert {"table5-k400", "table7-charades", "table9-k400-2shot", "table10-fine"} <= set(rows)
    assert all(r.paper is None and "not transcribed" in r.paper_note for r in rows.values())
    zero_shot = reproduce.plan(rows, rows["table8-ucf101-zero-shot"], tmp_path)
    # the K400 model (one run), then its evaluation on each UCF-101 split
    assert [r.name for r in zero_shot] == [
        "seed1-fold1",
        "seed1-fold1-on-fold1",
        "seed1-fold1-on-fold2",
        "seed1-fold1-on-fold3",
    ]
    assert zero_shot[0].row == "table5-k400" and zero_shot[0].preset == "k400"
    assert zero_shot[1].source == tmp_path / "table5-k400" / "seed1-fold1"
    assert zero_shot[3].evaluate == {"dataset": "ucf101", "zero_shot": "full", "split": "3"}
    fine = reproduce.plan(rows, rows["table10-fine"], tmp_path)
    assert [(r.settings["seed"], r.settings["aggregation"]) for r in fine] == [
        (1, "fine"),
        (2, "fine"),
        (3, "fine"),
    ]
    # 3 seeds x 20 epochs x (32 + 3) s on an A100 (docs/scale.md)
    assert reproduce.gpu_hours(rows, rows["table9-hmdb51-2shot"]) == pytest.approx(3 * 0.19)
    assert reproduce.gpu_hours(rows, rows["table5-k400"]) == pytest.approx(22.5)


def test_list_and_dry_run_print_the_rows_and_runs(tmp_path):
    code, listed, _ = run_app(app, "reproduce", "--list")
    assert code == 0
    line = next(x for x in listed.splitlines() if x.startswith("| table9-k400-2shot "))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[3:7] == ["n/t", "top1", "3", "36.75"]  # 3 x 20 x (36 min + 45 s)
    assert cells[7] == "`python -m trainer reproduce table9-k400-2shot`"
    out = tmp_path / "r"
    code, planned, _ = run_app(
        app, "reproduce", "table8-hmdb51-zero-shot", "--dry-run", "--runs", out
    )
    assert planned.splitlines() == [
        f"python -m trainer run --preset k400 --split 1 --seed 1 --out {out}/table5-k400/"
        "seed1-fold1 --resume",
        *(
            f"python -m trainer eval --checkpoint {out}/table5-k400/seed1-fold1 --dataset "
            f"hmdb51 --zero-shot full --split {k}"
            for k in (1, 2, 3)
        ),
    ]
    assert not out.exists()  # a dry run writes nothing
    code, _, error = run_app(app, "reproduce", "table99")
    assert code != 0 and "unknown row 'table99'" in str(error)  # `error: ...`, exit 2


def test_a_malformed_row_file_is_refused_by_name(tmp_path):
    path = tmp_path / "rows.yaml"
    path.write_text(yaml.safe_dump([{"id": "mine", "table": 1, "description": "x"}]))
    with pytest.raises(Exception, match=r"rows.yaml: row mine lacks metric, folds"):
        reproduce.load_rows(path)


def test_the_interval_by_hand(tmp_path):
    rows = {
        "r": reproduce.Row("r", 9, "three seeds", "top1", ("1",), 0.1, paper=0.65, seeds=(1, 2, 3))
    }
    numbers = {"r/seed1-fold1": 0.5, "r/seed2-fold1": 0.6, "r/seed3-fold1": 0.7}
    report = reproduce.reproduction(rows, rows["r"], tmp_path, numbers, "then")
    # mean 0.6, sample std 0.1, t(0.975, 2 dof) = 4.303: half-width 4.303 * 0.1 / sqrt(3)
    assert report["ours"]["mean"] == pytest.approx(0.6)
    assert report["ours"]["std"] == pytest.approx(0.1)
    assert report["ours"]["ci95"] == pytest.approx(0.24844, abs=1e-5)
    assert 4.303 * 0.1 / math.sqrt(3) == pytest.approx(0.24844, abs=1e-5)
    text = reproduce.reproduction_markdown(report)
    assert "* paper: 65.0" in text and "* ours: 60.0 ± 24.8 (n = 3)" in text
    assert "| r | 65.0 | 60.0 ± 24.8 (n = 3) | |" in text  # its line for the model zoo


def test_the_docs_table_is_what_list_computes():
    rows = reproduce.load_rows()
    page = (REPO / "docs" / "reproduce.md").read_text()
    assert reproduce.list_table(rows) in page
    assert reproduce.zoo_table(rows) in page  # every "ours" and "checkpoint" cell empty
    assert "[docs/reproduce.md](docs/reproduce.md)" in (REPO / "README.md").read_text()


def _tiny_row_file(world, path):
    settings = {
        k: str(v) if hasattr(v, "parent") else v
        for k, v in vars(run_config(world, None)).items()
        if k
        in (
            "dataset",
            "root",
            "subtexts",
            "clip_model",
            "clip_pretrained",
            "frames",
            "epochs",
            "batch_size",
            "lr",
            "warmup_epochs",
            "workers",
            "device",
        )
    }
    path.write_text(
        yaml.safe_dump(
            [
                {
                    "id": "tiny",
                    "table": "test",
                    "description": "the tiny list world, 1 epoch",
                    "metric": "top1",
                    "paper": None,
                    "paper_note": "a test row",
                    "settings": settings,
                    "folds": ["1"],
                    "seeds": [1, 2],
                    "gpu_hours_per_run": 0.0,
                },
                {
                    "id": "tiny-zero-shot",
                    "table": "test",
                    "description": "tiny's models on the list world again, as zero-shot",
                    "metric": "top1",
                    "zero_shot": {
                        "from": "tiny",
                        "dataset": "list",
                        "settings": {"root": settings["root"], "device": "cpu", "workers": 0},
                    },
                    "folds": ["1"],
                    "gpu_hours_per_run": 0.0,
                },
            ]
        )
    )
    return reproduce.load_rows(path)


def test_a_row_end_to_end_resumed_after_a_crash(world, tmp_path):
    from trainer.evaluation import evaluate_checkpoint
    from trainer.training import train

    rows = _tiny_row_file(world, tmp_path / "rows.yaml")
    runs = tmp_path / "runs"
    trained = []

    def crash_after_the_first(cfg, **options):
        if trained:
            raise KeyboardInterrupt  # killed while the second run starts
        trained.append(cfg.out)
        return train(cfg, **options)

    with pytest.raises(KeyboardInterrupt):
        reproduce.reproduce(rows, rows["tiny"], runs, crash_after_the_first, evaluate_checkpoint)
    assert not (runs / "tiny" / "reproduction.json").exists()

    trained.clear()

    def counting(cfg, **options):
        trained.append(cfg.out.name)
        return train(cfg, **options)

    out = reproduce.reproduce(rows, rows["tiny"], runs, counting, evaluate_checkpoint)
    assert trained == ["seed2-fold1"]  # the finished first run is read, not retrained
    report = json.loads((out / "reproduction.json").read_text())
    tops = [
        max(x["top1"] for x in read_metrics(runs / "tiny" / name) if "top1" in x)
        for name in ("seed1-fold1", "seed2-fold1")
    ]
    assert report["runs"] == {"tiny/seed1-fold1": tops[0], "tiny/seed2-fold1": tops[1]}
    mean, std = sum(tops) / 2, abs(tops[0] - tops[1]) / math.sqrt(2)
    assert report["ours"]["mean"] == pytest.approx(mean)
    assert report["ours"]["ci95"] == pytest.approx(12.706 * std / math.sqrt(2))
    assert report["settings"]["tiny/seed2-fold1"]["seed"] == 2
    assert report["hardware"][0]["world_size"] == 1 and report["hardware"][0]["device_name"]
    assert report["training_seconds"] > 0 and report["paper"] is None
    assert "* paper: not available (a test row)" in (out / "reproduction.md").read_text()

    trained.clear()  # everything finished: a rerun trains nothing
    reproduce.reproduce(rows, rows["tiny"], runs, counting, evaluate_checkpoint)
    assert trained == []

    # the zero-shot row evaluates tiny's two models (reused) and averages the two numbers
    out = reproduce.reproduce(rows, rows["tiny-zero-shot"], runs, counting, evaluate_checkpoint)
    assert trained == []
    report = json.loads((out / "reproduction.json").read_text())
    kept = [json.loads((out / f"seed{s}-fold1-on-fold1.json").read_text())["top1"] for s in (1, 2)]
    assert list(report["runs"].values()) == kept
    assert report["evaluated_on"][0]["world_size"] == 1 and report["hardware"]
    assert report["ours"]["mean"] == pytest.approx(sum(kept) / 2)
