"""Every setting of a run, declared once: config dataclasses by concern (`DataConfig`,
`ModelConfig`, `OptimConfig`, `RunSettings`), each field with its `Setting` (flag, help,
range), composed flat into `RunConfig`. The `run` command's options (`trainer.__main__`),
the range checks (`range_refusal`), the flag names (`flag_name`) and the config-file keys
(`trainer.config.read_config_file`) are all read from these fields.

`RunConfig` inherits the four concerns rather than holding them: config files, presets and
a run's config.json name settings by flat keys (`lr: 5e-5`), and every module reads
`cfg.lr`; the model's record in checkpoints holds `ModelConfig`'s settings
(`model.args.ModelArgs`). Light on purpose (no torch): the CLI imports it to build its options.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from storyboard_common.about import DEVICES
from storyboard_common.errors import MAX_BATCH, MAX_EPOCHS, MAX_SEED, MAX_WORKERS, Bounds, UserError

from .data.layouts import DATASETS, SPLIT_CHOICES, ListFiles
from .model.modes import AGGREGATIONS

AMP_MODES = ("bf16", "fp16", "none")
# How long a process waits at a collective (`--dist-timeout`): well above a checkpoint save
# or an evaluation's end on one rank, well below a night lost to a dead peer.
DIST_TIMEOUT_MINUTES = 30.0
DECODE_DEVICES = ("cpu", "cuda")
MAX_TIMEOUT_MINUTES = 7 * 24 * 60.0  # a week; beyond it Python's timedelta overflows

# Upper bounds (and those both stages share, in `storyboard_common.errors`): each far above
# any real use, far below where a value hangs a run, fills a disk or ends in a traceback from
# torch, numpy or itertools (the issue's `--views 1e21`).
MAX_FRAMES = 512  # frames per clip: a 16-frame clip is the paper's longest; 512 is 20 s at 25 fps
MAX_VIEWS = 1000  # temporal views of a video, training views a cache stores
MAX_COUNT = 1_000_000  # videos per class (shots), missing videos tolerated, log cadence
MAX_LAYERS = 48  # temporal transformer layers: CLIP's largest towers have 48
MAX_HEADS = 64  # attention heads: CLIP's widest tower has 20
MAX_TEMPERATURE = 100.0  # softmax temperatures: above 100 every class scores alike
MAX_DECAY = 10.0  # AdamW weight decay: lr x 10 halves the weights within a few steps
MAX_LOSS_WEIGHT = 1000.0  # lambda, the video-to-text loss's weight
MAX_PREFETCH = 64  # batches each loader worker holds ahead, in memory
MAX_SHORT_SIDE = 4096  # px: 4K video's short side is 2160
MAX_KEYFRAME_EVERY = 1000  # frames between keyframes: 40 s at 25 fps


@dataclass(frozen=True)
class Setting:
    """What one setting's field declares beyond its type and default: its CLI flag (None:
    `--` + the name with dashes; `off_flag` the negative of a boolean), its help, and the
    range its values must lie in (`at_least`, `at_most`, `positive`: finite and above zero,
    `choices`; every number has an upper bound, so no absurd value reaches the work),
    with the refusal's wording where a range says more than its bounds. `cli=False`: a
    setting only config files set. `resume_may_change`: why `run --resume` may change it
    (every other setting must stay as the run began). `moved_input`: the setting names a
    file or folder a run reads, and this says what its flag takes once it has moved.
    `completes`: the values shell completion offers where `choices` does not bound them (or
    a function returning them: names found on disk), with `metavar` the word the help shows
    for such a value."""

    help: str | None = None
    flag: str | None = None
    off_flag: str | None = None
    at_least: float | None = None
    at_most: float | None = None
    positive: bool = False
    unit: str = "number"  # what a positive setting counts in, for its refusal
    choices: tuple | None = None
    refusal: str | None = None  # a choice refused: "{flag}", "{value}", "{choices}"
    hint: str | None = None  # appended to a bound's refusal
    cli: bool = True
    resume_may_change: str | None = None
    moved_input: str | None = None
    completes: tuple | Callable[[], list] | None = None
    metavar: str | None = None


def setting(default, help: str | None = None, **declared):
    """A config field with its `Setting` (the one place a setting is declared)."""
    return field(default=default, metadata={"setting": Setting(help, **declared)})


def declared(f: dataclasses.Field) -> Setting:
    return f.metadata.get("setting", Setting())


def field_type(f: dataclasses.Field) -> tuple[type, bool]:
    """A setting's value type (str, int, float, bool or Path) and whether it may be None;
    the annotations are text here (`from __future__ import annotations`)."""
    text = str(f.type)
    return _TYPES[text.removesuffix(" | None")], text.endswith(" | None")


_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "Path": Path}


@dataclass
class DataConfig:
    """What a run reads: the dataset, its fold and few-shot list, how clips are sampled."""

    dataset: str = setting(
        "hmdb51",
        f"{', '.join(DATASETS[:-1])} or {DATASETS[-1]}.",
        completes=DATASETS,
        metavar="NAME",
    )
    root: Path | None = setting(
        None,
        "Dataset root (default: data/<name>, or $STORYBOARD_DATA/<name>).",
        moved_input="DIR (where the dataset is now)",
    )
    videos: Path | None = setting(
        None,
        "Where the videos are, if not under --root.",
        moved_input="DIR (where the videos are now)",
    )
    train_list: Path | None = setting(
        None,
        "--dataset list: the train list, e.g. mmaction2's or a few-shot list (train.txt; "
        "relative to --root).",
        moved_input="FILE (where the train list is now)",
    )
    test_list: Path | None = setting(
        None,
        "--dataset list: the test list (test.txt; relative to --root).",
        moved_input="FILE (where the test list is now)",
    )
    class_list: Path | None = setting(
        None,
        "--dataset list: the classes, `id,name` csv or one name a line as label_map.txt "
        "(classes.csv; relative to --root).",
        moved_input="FILE (where the class list is now)",
    )
    split: str = setting(
        "1",
        "Fold 1, 2, 3, or all (runs the three, reports mean).",
        choices=SPLIT_CHOICES,
    )
    shots: int | None = setting(
        None,
        "K videos per class (few-shot).",
        at_least=1,
        at_most=MAX_COUNT,
        hint="leave it out to train on the whole split (supervised)",
    )
    fewshot_list: Path | None = setting(
        None,
        "Reuse a saved few-shot list (fewshot.csv).",
        moved_input="FILE (where the few-shot list is now)",
    )
    # Charades: train on action instances, else whole videos
    charades_instances: bool = setting(True, cli=False)
    frames: int = setting(8, "Frames per clip T (8).", at_least=1, at_most=MAX_FRAMES)
    eval_clips: int = setting(
        1, "Temporal views at evaluation.", flag="--clips", at_least=1, at_most=MAX_VIEWS
    )
    eval_crops: int = setting(
        1, "Spatial views at evaluation (1 or 3).", flag="--crops", choices=(1, 3)
    )
    features: Path | None = setting(
        None,
        "Train and evaluate from a feature cache (cache-features); needs --freeze-backbone.",
        moved_input="DIR (where the feature cache is now)",
    )
    subtexts: Path | None = setting(
        None,
        "subtexts.parquet (default: artifacts/<dataset>/<clip-tag>/).",
        moved_input="FILE (where the run's subtexts.parquet is now)",
    )

    def list_files(self) -> ListFiles:
        """The `list` dataset's files these settings name."""
        return ListFiles(self.train_list, self.test_list, self.class_list)


@dataclass
class ModelConfig:
    """The model: its CLIP and the head and temporal module over it."""

    clip_model: str = setting(
        "ViT-B-16",
        "open_clip name or model-config JSON (ViT-B-16).",
        moved_input="FILE (where the CLIP's model-config JSON is now)",
    )
    clip_pretrained: str = setting(
        "openai",
        "Tag, checkpoint path or none (openai).",
        moved_input="FILE (where the CLIP checkpoint is now)",
    )
    aggregation: str = setting(
        "coarse+fine",
        "mean, global, coarse, fine or coarse+fine.",
        choices=AGGREGATIONS,
        refusal="unknown {flag} {value!r}; choose one of {choices}.",
    )
    temporal_layers: int = setting(
        0, "Temporal transformer layers (0; paper 6).", at_least=0, at_most=MAX_LAYERS
    )
    attention_heads: int = setting(
        1, "Cross-attention heads of Eq. 5-7 (1).", flag="--heads", at_least=1, at_most=MAX_HEADS
    )
    tau_coarse: float = setting(
        0.01, "Temperature of Eq. 8 (0.01).", positive=True, at_most=MAX_TEMPERATURE
    )
    tau_fine: float = setting(
        0.01, "Temperature of Eq. 10 (0.01).", positive=True, at_most=MAX_TEMPERATURE
    )
    freeze_backbone: bool = setting(
        False,
        "Train the head alone on a frozen CLIP visual tower (needed by --features); "
        "--train-backbone: fine-tune the tower too (default).",
        off_flag="--train-backbone",
    )
    grad_checkpointing: bool = setting(
        False, "Recompute the visual tower's activations in the backward pass: less memory, slower."
    )


@dataclass
class OptimConfig:
    """How a run optimises: epochs, batch, learning rates, loss weight, precision."""

    epochs: int = setting(20, "Epochs (20).", at_least=1, at_most=MAX_EPOCHS)
    batch_size: int = setting(
        32,
        "Global batch: micro-batch x processes x accumulation steps, exactly (32).",
        at_least=1,
        at_most=MAX_BATCH,
    )
    micro_batch: int | None = setting(
        None,
        "Clips per forward pass on one device (default: batch / processes).",
        at_least=1,
        at_most=MAX_BATCH,
    )
    lr: float = setting(5e-5, "Head learning rate (5e-5); backbone x0.1.", positive=True, at_most=1)
    backbone_lr_scale: float = setting(0.1, at_least=0, at_most=1, cli=False)
    weight_decay: float = setting(0.2, "AdamW weight decay (0.2).", at_least=0, at_most=MAX_DECAY)
    warmup_epochs: float = setting(
        5.0, "Linear warm-up epochs (5).", at_least=0, at_most=MAX_EPOCHS
    )
    lam: float = setting(
        1.0,
        "Weight of the video-to-text loss (1).",
        flag="--lambda",
        at_least=0,
        at_most=MAX_LOSS_WEIGHT,
    )
    amp: str = setting("bf16", "bf16, fp16 or none (CUDA; CPU is fp32).", choices=AMP_MODES)
    compile: bool = setting(
        False,
        "Compile the model with torch.compile (faster steps after a slower first one).",
        resume_may_change="torch.compile: the same model, compiled or not",
    )
    tf32: bool = setting(
        True,
        "TF32 matmuls and convolutions under --amp none on GPUs that have them (Ampere on).",
        resume_may_change="the precision of fp32 matmuls on the GPU",
    )


@dataclass
class RunSettings:
    """Where and how a run goes: seed, device, folder, evaluation cadence, workers."""

    seed: int = setting(
        0, "Seed of sampling, few-shot lists, init (0).", at_least=0, at_most=MAX_SEED
    )
    device: str = setting(
        "auto",
        "auto, cpu, cuda (under torchrun process k takes GPU k) or cuda:N (one process).",
        completes=DEVICES,
        metavar="DEVICE",
        resume_may_change="where the run computes (the checkpoint is loaded onto it)",
    )
    dist_timeout: float = setting(
        DIST_TIMEOUT_MINUTES,
        f"Minutes a torchrun process waits for the others at a collective before the run "
        f"stops ({DIST_TIMEOUT_MINUTES:g}); waits for the main rank's set-up are not bounded "
        "by it.",
        positive=True,
        at_most=MAX_TIMEOUT_MINUTES,
        unit="number of minutes",
        resume_may_change="how long processes wait for each other, not what they compute",
    )
    out: Path | None = setting(
        None, "Run directory (default runs/<name>).", resume_may_change="the run directory itself"
    )
    eval_every: int = setting(1, "Evaluate every N epochs (1).", at_least=1, at_most=MAX_EPOCHS)
    workers: int | None = setting(
        None,
        "DataLoader workers per process (default: the cores this process may use, shared "
        "among the processes on its machine; none with --features).",
        at_least=0,
        at_most=MAX_WORKERS,
        resume_may_change="DataLoader workers: data are keyed by (seed, epoch, item), "
        "not by worker",
    )
    prefetch: int = setting(
        4,
        "Batches each DataLoader worker prepares ahead (4).",
        at_least=1,
        at_most=MAX_PREFETCH,
        resume_may_change="how far ahead workers read, not what they read",
    )
    decode_device: str = setting(
        "cpu",
        "Where frame folders' JPEGs are decoded and cropped: cpu (the loader workers; "
        "default) or cuda (the run's GPU, in batches, the workers only reading bytes).",
        choices=DECODE_DEVICES,
        resume_may_change="where JPEGs are decoded: the same views, to within the decoders' "
        "rounding",
    )
    preset: str | None = setting(
        None,
        "A shipped config of the paper's settings by name (`python -m trainer presets` "
        "lists them and their files); --config and flags override it.",
        completes=lambda: preset_names(),
        metavar="NAME",
        resume_may_change="a name for values that are compared one by one",
    )


@dataclass
class RunConfig(RunSettings, OptimConfig, ModelConfig, DataConfig):
    """A run's settings: the four concerns' fields, flat (`cfg.lr`), as config files, presets
    and config.json name them."""

    @classmethod
    def from_saved(cls, values: dict) -> RunConfig:
        """A config from its JSON form (config.json, a checkpoint): paths come back as paths;
        keys that are not settings (from other versions) are ignored."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        return cls(
            **{
                name: Path(value)
                if value is not None and field_type(fields[name])[0] is Path
                else value
                for name, value in values.items()
                if name in fields
            }
        )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            refused = range_refusal(f, getattr(self, f.name))
            if refused:
                raise UserError(refused)
        if self.features is not None and not self.freeze_backbone:
            raise UserError(
                f"--features {self.features} holds frozen-backbone features: add "
                "--freeze-backbone, or drop --features to train the backbone."
            )


def preset_names() -> list[str]:
    """The shipped presets' names, for completing --preset (read when asked)."""
    from .config import preset_files

    return list(preset_files())


def range_refusal(f: dataclasses.Field, value) -> str | None:
    """Why `value` lies outside the range field `f` declares (one sentence naming its flag, or
    its name where it has none), else None. Numbers outside their meaning are refused here,
    not found later as a NaN loss, an optimiser traceback or a flag silently read as its
    default."""
    meta = declared(f)
    if value is None:
        return None
    label = flag_name(f.name) if meta.cli else f.name
    if meta.choices is not None and str(value) not in map(str, meta.choices):
        shown = [str(c) for c in meta.choices]
        if meta.refusal:
            return meta.refusal.format(flag=label, value=value, choices=", ".join(shown))
        listed = ", ".join(shown[:-1]) + " or " + shown[-1]
        return f"{label} must be {listed}, not {value!r}."
    refused = Bounds(meta.at_least, meta.at_most, meta.positive, meta.unit).refusal(label, value)
    if refused and meta.hint:
        return refused.removesuffix(".") + f": {meta.hint}."
    return refused


# The bounds of the numeric options that are one command's own, not run settings (`run`'s
# --log-every, `cache-features` --views, `prepare-videos`, `check-data`, `predict`), by
# flag: checked by the commands (`check_ranges`) before they write anything.
COMMAND_BOUNDS: dict[str, Bounds] = {
    "--views": Bounds(1, MAX_VIEWS),
    "--log-every": Bounds(0, MAX_COUNT),
    "--allow-missing": Bounds(0, MAX_COUNT),
    "--frames": Bounds(1, MAX_FRAMES),
    "--workers": Bounds(1, MAX_WORKERS),
    "--short-side": Bounds(96, MAX_SHORT_SIDE),
    "--keyframe-every": Bounds(1, MAX_KEYFRAME_EVERY),
    "--top": Bounds(1, MAX_VIEWS),
}


def flag_name(field_name: str) -> str:
    """The CLI flag of a RunConfig field: its declared one, else `--` + its name with dashes."""
    return _FLAGS.get(field_name) or "--" + field_name.replace("_", "-")


_FLAGS = {f.name: declared(f).flag for f in dataclasses.fields(RunConfig)}
