"""The storyboard world and what runs on it, beside the library: the synthetic videos built
to test the method (`world`), the small CLIP trained on their frames (`pretrain`), the
study of every aggregation mode over seeds (`study/`: its design, runner, collection,
report, statistics and TPP groups) and its one-seed digest (`demo`). It runs both stages
(`subtext_gen` and `trainer`); neither they nor `storyboard_common` import it. Its CLI is
`python -m storyworld demo|study|pretrain-clip`; other packages (the benchmarks) may import
`WORLD_CLIP` only."""

from storyboard_common.resources import data_path

__all__ = ["WORLD_CLIP"]

# The world CLIP's architecture (64 px, 3 layers, width 128): the one place that names it.
WORLD_CLIP = str(data_path("clip", "StoryboardWorld-CLIP.json"))
