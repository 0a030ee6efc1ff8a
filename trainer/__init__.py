"""Stage two of Storyboard: video data, the CLIP video model, training and evaluation.

Where to start reading: `training.train` (one fold of a run), which resolves its settings
(`config.resolved_config`), builds what it trains with in `run_setup` (its data from
`run_data`, its model from `run_models.build`, its optimiser and schedule from `schedule`),
resumes and records the run with `resuming`, trains in a `training.Trainer` with its
precision from `precision`, and evaluates with `evaluation`. The model is `model/` (the
visual tower, temporal module and storyboard head, Eq. 5-12) and the loss `loss` (Eq.
13-15); videos and dataset layouts are `data/`. `run_models` also loads trained models back (run
directories, exported folders, `hf-hub:`) and exports them through `export`. `cache/`
is the frozen-feature cache. The top-level `storyworld` package is built on all this (the
synthetic world, the study, the demo); nothing here imports it.

`__all__` names the modules other packages (`storyworld`) may import, and each subpackage's
`__init__` its own; a module's names without a leading underscore are its public ones. The
rest is this stage's inside. Nothing is imported here, so `python -m trainer --help` loads
only what the CLI needs (tests/project/test_layers_public.py).
"""

__all__ = [
    "cache",
    "data",
    "environment",
    "metrics",
    "model",
    "predict",
    "report",
    "run_models",
    "schedule",
    "settings",
    "subtexts",
    "training",
]
