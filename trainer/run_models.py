"""A model and its class texts: built for a run (`build`), loaded back from a run directory,
an exported model folder or `hf-hub:ORG/REPO` (`load_run`), and exported (`export_run`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from storyboard_common.clip import LoadedClip, load_clip
from storyboard_common.errors import UserError, first_line
from storyboard_common.subtexts import SUBTEXTS_FILE, read_subtexts

from .checkpoints import check_finite_weights, json_values, load_checkpoint
from .config import INPUTS, check_recorded_inputs, input_paths, subtexts_artifact
from .distributed import DistInfo, init_distributed
from .export import (
    CLIP_CONFIG_FILE,
    CONFIG_FILE,
    EXPORT_FORMAT,
    EXPORT_VERSION,
    HUB_PREFIX,
    WEIGHTS_FILE,
    check_export_out,
    hub_snapshot,
    is_export,
    model_card,
    read_export_config,
    read_weights,
    settled_export,
    subtext_source,
    weight_shapes,
    write_export,
)
from .model.aggregation import ClassText
from .model.args import ModelArgs
from .model.video_clip import UNTRAINED_LOG_LOGIT_SCALE, VideoCLIP, build_model, video_model
from .settings import RunConfig, flag_name
from .subtexts import TrainedTexts, artifact_class_text, recorded_texts, require_subtexts


@dataclass
class RunModel:
    """A run's model and its class texts, on the run's device, and what it was built of."""

    model: VideoCLIP
    text: ClassText
    args: ModelArgs  # the model's record, which it was built from
    clip_name: str  # the name open_clip builds the architecture by
    class_names: list[str]  # the artifact's classes, in id order
    sub_texts: list[list[str]]  # each class's sub-texts, as the artifact holds them
    texts: dict  # the artifact's identity (`SubtextArtifact.identity`), which checkpoints store

    @property
    def model_args(self) -> dict:
        """The model's record as checkpoints (`model_args`) and exports (`architecture`)
        store it."""
        return dataclasses.asdict(self.args)

    @property
    def image_size(self) -> int:
        """The CLIP's input size (pixels)."""
        return self.args.image_size

    @property
    def clip_id(self) -> tuple[str, str]:
        """What artifacts record for the CLIP (`clip_identity`)."""
        return self.args.clip["model_id"], self.args.clip["pretrained_id"]


# A run's inputs that belong to its dataset (read from where it recorded them on its own
# dataset only), and those of its CLIP (read on any dataset).
# (an evaluation reads no train list)
DATA_INPUTS = ("root", "videos", "test_list", "class_list", "subtexts")
CLIP_INPUTS = ("clip_model", "clip_pretrained")


def build(
    cfg: RunConfig,
    dist_info: DistInfo,
    subtexts: Path,
    clip: LoadedClip | None = None,
    trained: TrainedTexts | None = None,
) -> RunModel:
    """The run's model over its CLIP (`cfg.clip_model` with `cfg.clip_pretrained`, unless
    `clip` is given) and the class texts of `subtexts`, on the run's device, built from its
    record (`ModelArgs`). `trained`: the texts its weights were trained with, which
    `subtexts` must still hold (checked before the CLIP is loaded)."""
    artifact = read_subtexts(require_subtexts(subtexts, cfg.dataset))
    if trained is not None:
        trained.check(artifact, subtexts)
    clip = clip or load_clip(cfg.clip_model, cfg.clip_pretrained, str(dist_info.device))
    text = artifact_class_text(
        artifact, subtexts, (clip.model_id, clip.pretrained_id), clip.embed_dim
    )
    args = ModelArgs.of_run(cfg, clip)
    return RunModel(
        build_model(clip, args).to(dist_info.device),
        text.to(dist_info.device),
        args,
        clip.model_name,
        artifact.class_names,
        artifact.sub_texts,
        artifact.identity,
    )


@dataclass
class LoadedRun:
    cfg: RunConfig  # the run's settings, with the target dataset
    trained_on: dict  # the run's own settings, as saved
    built: RunModel
    dist_info: DistInfo
    subtexts: Path
    checkpoint: dict  # the checkpoint's {"source", "epoch", "best" (its metrics)}

    @property
    def class_names(self) -> list[str]:
        return self.built.class_names


CHECKPOINTS = ("best", "last")


def _run_checkpoint(run_dir: Path, checkpoint: str) -> tuple[Path, dict]:
    """The path and state of a run directory's best (else last) or last checkpoint."""
    if checkpoint not in CHECKPOINTS:
        raise UserError(f"the checkpoint to load is best or last, not {checkpoint!r}.")
    path = run_dir / "checkpoints" / f"{checkpoint}.pt"
    path = path if path.exists() else run_dir / "checkpoints" / "last.pt"
    if not path.exists():
        raise UserError(
            f"no checkpoint in {run_dir / 'checkpoints'}: not a run directory (nor a model "
            "folder from `trainer export`, nor hf-hub:ORG/REPO)."
        )
    if path.name == "best.pt" and (run_dir / "checkpoints" / "last.pt").exists():
        hint = "the run's last.pt may still load (`eval --last`)"
    else:
        hint = "resume the run (`run --resume`) or train it again"
    return path, load_checkpoint(path, "cpu", hint)


def load_run(
    source: Path | str,
    dataset: str | None = None,
    subtexts: Path | None = None,
    device: str = "auto",
    checkpoint: str = "best",
    reads_data: bool = False,
    **given,
) -> LoadedRun:
    """A trained model with a dataset's class texts (the model's own dataset unless
    `dataset` names another, which then needs `subtexts` or the default artifact). `source`
    is a run directory (its best, else last checkpoint; `checkpoint="last"`: its last), a
    model folder from `export_run`, or `hf-hub:ORG/REPO` naming one on the Hugging Face Hub.

    `given`: settings given now (None: not given), over the run's recorded ones. On its own
    dataset a run reads its recorded sub-texts and, for a caller that `reads_data`, its
    dataset root and videos; on any dataset its recorded CLIP files. Each must still exist
    (else one sentence naming it and its flag, before any model is built)."""
    given = {"subtexts": subtexts, **given}
    if str(source).startswith(HUB_PREFIX):
        return _load_export(
            hub_snapshot(str(source)), str(source), dataset, device, checkpoint, given
        )
    source = settled_export(Path(source))
    if is_export(source):
        return _load_export(source, str(source), dataset, device, checkpoint, given)
    path, state = _run_checkpoint(source, checkpoint)
    check_finite_weights(state["model"], path, "train the run again (with a lower --lr)")
    saved = json_values(state["config"])
    own = dataset in (None, saved["dataset"])
    data = DATA_INPUTS if reads_data else ("subtexts",)
    used = [*CLIP_INPUTS, *(data if own else ())]
    recorded = input_paths(saved)
    check_recorded_inputs(
        {name: recorded[name] for name in used if name in recorded and given.get(name) is None}
    )
    settings = {**saved, **({} if own else dict.fromkeys(DATA_INPUTS)), **_given_values(given)}
    checkpoint_info = {"source": str(path), "epoch": state["epoch"], "best": state["best"]}
    # A checkpoint written before model records were: its settings hold the same keys.
    recorded = ModelArgs.from_stored(json_values(state.get("model_args")) or saved, str(path))
    # The run's own texts, unless --subtexts names the ones to use.
    trained = None
    if own and given["subtexts"] is None:
        instead = f"pass --subtexts {saved['subtexts']} to use these instead"
        trained = recorded_texts(state.get("subtexts"), f"the run {source}", instead)
    return _loaded_run(
        settings,
        saved,
        recorded,
        state["model"],
        checkpoint_info,
        dataset,
        device,
        trained=trained,
    )


def _given_values(given: dict) -> dict:
    """The settings of `given` that were given (not None)."""
    return {name: value for name, value in given.items() if value is not None}


def _loaded_run(
    settings: dict,
    trained_on: dict,
    recorded: ModelArgs,
    weights: dict,
    checkpoint_info: dict,
    dataset: str | None,
    device: str,
    clip: LoadedClip | None = None,
    trained: TrainedTexts | None = None,
) -> LoadedRun:
    """The model of the record `recorded` with `weights`, over
    `clip` (else the CLIP `settings` name), on `dataset` (else the settings' own) with the
    class texts of their `subtexts` (else the dataset's default artifact; `trained`: the
    texts the weights were trained with, which they must hold). The record's values win over
    the settings' (the clips evaluated have the frames the model embeds)."""
    dataset = dataset or settings["dataset"]
    values = {**settings, **recorded.run_settings(), "dataset": dataset, "device": device}
    cfg = RunConfig.from_saved(values)
    dist_info = init_distributed(device, cfg.dist_timeout)
    subtexts = subtexts_artifact(cfg)
    run_model = build(cfg, dist_info, subtexts, clip, trained)
    recorded.check_clip(run_model.args, checkpoint_info["source"])
    missing, unexpected = run_model.model.load_state_dict(weights, strict=False)
    if unexpected or missing:
        raise UserError(
            f"{checkpoint_info['source']} does not fit the model built for it "
            f"({(missing + unexpected)[:3]})."
        )
    run_model.model.eval()
    return LoadedRun(cfg, trained_on, run_model, dist_info, subtexts, checkpoint_info)


def _load_export(
    folder: Path, label: str, dataset: str | None, device: str, checkpoint: str, given: dict
) -> LoadedRun:
    """An exported model folder: the architecture from its own files, the weights from
    model.safetensors, its class texts on its own dataset; nothing of the machine it was
    trained on is needed (the dataset is not shipped: `root` is the given or default one)."""
    if checkpoint != "best":
        raise UserError(f"{label} is an exported model, which holds one checkpoint: drop --last.")
    for name in CLIP_INPUTS:
        if given.get(name) is not None:
            raise UserError(
                f"{label} is an exported model, which holds its CLIP: drop {flag_name(name)}."
            )
    config = read_export_config(folder)
    saved = config["training"]
    config_file = str(folder / CONFIG_FILE)
    recorded = ModelArgs.from_stored(config["architecture"], config_file)
    _check_export_shapes(folder, [recorded, ModelArgs.from_stored(saved, config_file)])
    subtexts = given["subtexts"]
    if subtexts is None:
        if (dataset or saved["dataset"]) != saved["dataset"]:
            raise UserError(
                f"{label} was trained on {saved['dataset']}: evaluating {dataset} takes "
                f"--subtexts, {dataset}'s subtexts.parquet scored with this model's CLIP "
                f"({config['clip']['model_id']}, {config['clip']['pretrained_id']})."
            )
        subtexts = folder / SUBTEXTS_FILE
    clip = load_clip(str(folder / CLIP_CONFIG_FILE), "none", str(init_distributed(device).device))
    # Built without weights (they are in model.safetensors), known as the CLIP it was.
    clip = dataclasses.replace(
        clip, model_id=config["clip"]["model_id"], pretrained_id=config["clip"]["pretrained_id"]
    )
    checkpoint_info = {"source": label, "epoch": config["epoch"], "best": config.get("metrics")}
    # The author's data are not here: none of the recorded data paths is read.
    data = [name for name in INPUTS if name not in CLIP_INPUTS]
    settings = {**saved, **dict.fromkeys(data), **_given_values(given), "subtexts": subtexts}
    weights = read_weights(folder)
    check_finite_weights(weights, f"{label}/{WEIGHTS_FILE}", "download or export the model again")
    instead = f"pass --subtexts {subtexts} to use these instead, or download or export it again"
    trained = (
        None
        if given["subtexts"] is not None
        else recorded_texts(config["subtexts"], label, instead)
    )
    return _loaded_run(
        settings,
        saved,
        recorded,
        weights,
        checkpoint_info,
        dataset,
        device,
        clip,
        trained,
    )


def _check_export_shapes(folder: Path, descriptions: list[ModelArgs]) -> None:
    """Refuse an export whose clip_config.json and config.json describe another model than
    its model.safetensors holds, before any model is allocated: config.json describes it
    twice (its model record, `architecture`, and the run's settings, `training`), and each
    model described is built on the meta device (no memory, well under a second) and each
    tensor's shape compared with the safetensors header."""
    files = f"{folder / CLIP_CONFIG_FILE} and {folder / CONFIG_FILE}"
    stored = weight_shapes(folder)
    described = {repr(sorted(args.run_settings().items())): args for args in descriptions}
    for args in described.values():
        _check_shapes(folder, files, args, stored)


def _check_shapes(folder: Path, files: str, args: ModelArgs, stored: dict) -> None:
    import torch

    try:
        with torch.device("meta"):
            clip = load_clip(str(folder / CLIP_CONFIG_FILE), "none", "meta")
            RunConfig(**args.run_settings())  # its ranges
            model = video_model(clip.model.visual, clip.embed_dim, UNTRAINED_LOG_LOGIT_SCALE, args)
    except UserError as exc:
        raise UserError(f"{files} do not describe a model: {exc}") from exc
    except Exception as exc:  # a file edited by hand: any error of the build is its fault
        raise UserError(
            f"{files} do not describe a model ({type(exc).__name__}: {first_line(exc, 100)}); "
            "download or export the model again."
        ) from exc
    described = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    for name in sorted(described.keys() | stored.keys()):
        if described.get(name) != stored.get(name):
            raise UserError(
                f"{folder / WEIGHTS_FILE} does not fit {files}: tensor {name} is "
                f"{_shape(stored.get(name))} in the weights but {_shape(described.get(name))} "
                "in the model they describe; download or export the model again."
            )


def _shape(shape: tuple[int, ...] | None) -> str:
    return "absent" if shape is None else "[" + ", ".join(map(str, shape)) + "]"


def export_run(run_dir: Path, out: Path, checkpoint: str = "best", **given) -> Path:
    """Write a run's checkpoint as a self-contained model folder (`trainer/export.py`):
    safetensors weights of the whole model, its config, the CLIP's architecture, the class
    texts and a model card. `given`: where the run's inputs are now (`subtexts`, the CLIP's
    files), if not where it recorded them. -> `out`."""
    import open_clip

    check_export_out(out)
    loaded = load_run(run_dir, device="cpu", checkpoint=checkpoint, **given)
    weights = loaded.built.model.state_dict()
    clip_config = open_clip.get_model_config(loaded.built.clip_name)
    if clip_config is None:
        raise UserError(
            f"the architecture of CLIP {loaded.cfg.clip_model} is not an open_clip config this "
            "machine knows; export from a run whose --clip-model is an open_clip name or a "
            "model-config JSON."
        )
    cfg, (model_id, pretrained_id) = loaded.cfg, loaded.built.clip_id
    config = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "architecture": loaded.built.model_args,
        "clip": {
            "model_id": model_id,
            "pretrained_id": pretrained_id,
            "config_file": CLIP_CONFIG_FILE,
        },
        "evaluation": {"clips": cfg.eval_clips, "crops": cfg.eval_crops},
        "dataset": cfg.dataset,
        "classes": loaded.class_names,
        "checkpoint": Path(loaded.checkpoint["source"]).stem,
        "epoch": loaded.checkpoint["epoch"],
        "metrics": loaded.checkpoint["best"],
        "subtexts": {**subtext_source(loaded.subtexts), **loaded.built.texts},
        "training": loaded.trained_on,
    }
    return write_export(
        out,
        weights,
        config,
        clip_config,
        loaded.subtexts,
        model_card(config),
    )
