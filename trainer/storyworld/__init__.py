"""The storyboard world and what runs on it: the synthetic videos built to test the method
(`world`), the small CLIP trained on their frames (`pretrain`), the study of every
aggregation mode over seeds (`study`, with its statistics and probes in `analysis`) and its
one-seed digest (`demo`). The library in `trainer/` knows nothing of it."""

from storyboard_common.resources import data_path

# The world CLIP's architecture (64 px, 3 layers, width 128): the one place that names it.
WORLD_CLIP = str(data_path("clip", "StoryboardWorld-CLIP.json"))
