"""`run --compile` (inductor on the CPU): the eager run's losses, and no recompilation after
the first batch of each size."""

from __future__ import annotations

import pytest
import torch

from testkit.cli import lines
from testkit.list_runs import frozen_config, make_cache
from trainer import training
from trainer.run_log import STEPS_FILE, LogSettings


@pytest.mark.slow  # inductor compiles the head's graphs with a C++ compiler (a minute or two)
def test_compiled_steps_match_eager_and_compile_once_per_batch_size(world, tmp_path, monkeypatch):
    cache = tmp_path / "features"
    make_cache(world, cache, views=2)
    every_step = LogSettings(every=1)
    # 9 training videos in batches of 4: sizes 4, 4, 1 in each of the 2 epochs
    settings = dict(features=cache, batch_size=4)
    training.train(
        frozen_config(world, out=tmp_path / "eager", **settings), False, False, every_step
    )

    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    real_step, compiled_by_size = training.train_step, []

    def counted(model, text, group, *args, **kwargs):
        before = counters["frames"]["ok"]
        done = real_step(model, text, group, *args, **kwargs)
        compiled_by_size.append((len(group[0]["video_ids"]), counters["frames"]["ok"] - before))
        return done

    monkeypatch.setattr(training, "train_step", counted)
    compiled = frozen_config(world, out=tmp_path / "compiled", compile=True, **settings)
    training.train(compiled, False, False, every_step)

    eager = [s["loss"] for s in lines(tmp_path / "eager" / STEPS_FILE)]
    steps = [s["loss"] for s in lines(tmp_path / "compiled" / STEPS_FILE)]
    assert len(steps) == len(eager) == 6
    assert steps == pytest.approx(eager, abs=1e-4)
    assert [size for size, _ in compiled_by_size] == [4, 4, 1, 4, 4, 1]
    seen = set()
    for size, frames in compiled_by_size:
        if size in seen:
            assert frames == 0, compiled_by_size  # a size met before: no recompilation
        else:
            assert frames > 0, compiled_by_size  # the first of a size compiles
        seen.add(size)
