"""report.md from a hand-made run directory: the best evaluation is chosen and quoted right."""

import json

import pandas as pd
from PIL import Image

from trainer.report import write_report

CONFIG = {
    "dataset": "list",
    "split": "1",
    "shots": 2,
    "aggregation": "coarse+fine",
    "seed": 3,
    "clip_model": "tiny",
    "clip_pretrained": "none",
}


def _run_dir(tmp_path, evals, per_class=True):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(CONFIG))
    log = []
    for epoch, result in enumerate(evals, start=1):
        log.append({"epoch": epoch, "train_loss": 2.0 / epoch})
        log.append({"epoch": epoch, **result})
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in log))
    if per_class:
        pd.DataFrame({"class_name": ["a", "b"], "top1": [1.0, 0.5]}).to_csv(
            run / "per_class_accuracy.csv", index=False
        )
        pd.DataFrame({"pred": [0, 1, 0], "label": [0, 1, 1]}).to_parquet(
            run / "predictions.parquet"
        )
    return run


def test_single_label_report_quotes_the_best_top1_epoch(tmp_path):
    evals = [
        {"top1": 0.25, "top5": 1.0, "mean_class_acc": 0.2, "map": None},
        {"top1": 0.75, "top5": 1.0, "mean_class_acc": 0.7, "map": None},
        {"top1": 0.5, "top5": 1.0, "mean_class_acc": 0.5, "map": None},
    ]
    report = write_report(_run_dir(tmp_path, evals)).read_text()
    assert "Best evaluation (epoch 2): top1 0.7500, top5 1.0000, mean_class_acc 0.7000." in report
    assert "shots `2`, aggregation `coarse+fine`, seed `3`" in report
    for png in ("curves.png", "per_class.png", "confusion.png"):
        assert f"]({png})" in report
        with Image.open(tmp_path / "run" / png) as image:
            assert image.format == "PNG" and min(image.size) > 200


def test_multi_label_report_picks_the_best_map_and_skips_missing_tables(tmp_path):
    evals = [
        {"top1": 0.9, "top5": 1.0, "mean_class_acc": 0.9, "map": 0.3},
        {"top1": 0.1, "top5": 0.5, "mean_class_acc": 0.1, "map": 0.4},
    ]
    report = write_report(_run_dir(tmp_path, evals, per_class=False)).read_text()
    assert "Best evaluation (epoch 2):" in report and "map 0.4000" in report
    assert "per_class.png" not in report and "confusion.png" not in report
