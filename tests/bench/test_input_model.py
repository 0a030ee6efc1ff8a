"""docs/scale.md's input model (bench/input_model.py): its arithmetic by hand, and the table
the docs show is the one the module computes."""

import pytest

from bench import input_model
from testkit.cli import REPO


def test_gpu_rate_and_cores_by_hand():
    # ViT-B/16, 8 frames: 35.2 GFLOP x 4 passes x 8 frames = 1.1264 TFLOP a clip; an A100 at
    # 40% of 312 TFLOP/s sustains 124.8: 110.8 clips/s.
    rate = input_model.gpu_clips_per_s("ViT-B/16", 8, "A100")
    assert rate == pytest.approx(124.8 / 1.1264)
    assert input_model.cores_per_gpu(rate, 2.9) == pytest.approx(110.80 / 2.9, rel=1e-4)
    # ViT-L/14 costs 162 / 35.2 = 4.6x a clip; 16 frames cost twice 8.
    assert input_model.gpu_clips_per_s("ViT-L/14", 8, "H100") == pytest.approx(
        input_model.gpu_clips_per_s("ViT-B/16", 8, "H100") * 35.2 / 162
    )
    assert input_model.gpu_clips_per_s("ViT-B/16", 16, "A100") == pytest.approx(rate / 2)


def test_table_rows_and_the_docs_show_it():
    table = input_model.cores_table()
    assert "| ViT-B/16, 8 f, A100 | ~111 | 25-38 | 6.2-7.9 | 1.0-2.2 | 0.5-0.8 |" in table
    assert table in (REPO / "docs" / "scale.md").read_text()
