"""The exported model folder that travels, and its model card.

`python -m trainer export RUN --out DIR` writes a model folder in the Hugging Face Hub's
conventions, with no pickle in it:

    model.safetensors   the whole video model: visual tower, temporal module, head
    config.json         `EXPORT_FORMAT`, the architecture, the CLIP's identity, frames,
                        views, classes, the run's settings and metrics
    clip_config.json    the open_clip model config, so the architecture builds anywhere
    subtexts.parquet    the class texts the head reads (the run's sub-text artifact)
    README.md           the model card (`model_card`)

It is written all or nothing (`write_export`); `read_export_config`, `weight_shapes` and
`read_weights` read it back, the config checked first and the weights' shapes read from the
safetensors header before any tensor; `hub_snapshot` fetches one from `hf-hub:ORG/REPO`
through `huggingface_hub`, from its cache first (no network call), honouring
`HF_HUB_OFFLINE`. `run_models.export_run` builds what goes in it from a run.
"""

from __future__ import annotations

import json
import secrets
import shutil
from pathlib import Path

import torch

from storyboard_common import hub
from storyboard_common.about import paper_bibtex
from storyboard_common.clip import hub_base_model
from storyboard_common.errors import UserError, first_line
from storyboard_common.files import atomic_write, atomic_write_json, atomic_write_text, os_reason
from storyboard_common.subtexts import SUBTEXTS_FILE, ArtifactMeta, read_meta

from .data.layouts import has_folds

EXPORT_FORMAT = "storyboard-video-model"
EXPORT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CLIP_CONFIG_FILE = "clip_config.json"
CARD_FILE = "README.md"
HUB_PREFIX = "hf-hub:"
HUB_FILES = ["*.json", "*.safetensors", "*.parquet", "*.md"]  # what a download fetches


def is_export(path: Path) -> bool:
    return (Path(path) / WEIGHTS_FILE).is_file() and (Path(path) / CONFIG_FILE).is_file()


def _staging_names(out: Path) -> tuple[str, str]:
    """The prefixes of the hidden siblings an export of `out` writes (the new folder) and
    sets aside (the export it replaces): `.NAME.export-*` and `.NAME.replaced-*`."""
    return f".{out.name}.export-", f".{out.name}.replaced-"


def settled_export(path: Path) -> Path:
    """The export at `path`; where an export over it was killed between setting the old
    one aside and renaming the new one in (no folder at `path`), the old one, still whole."""
    path = Path(path)
    if path.exists() or not path.parent.is_dir():
        return path
    aside = [p for p in path.parent.glob(_staging_names(path)[1] + "*") if is_export(p)]
    return aside[0] if aside else path


def check_export_out(out: Path) -> None:
    """Refuse an `--out` that an export may not replace: a file, or a folder of other files."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder: pass a new folder.")
    if out.is_dir() and any(out.iterdir()) and not is_export(out):
        raise UserError(f"--out {out} is not empty and not an exported model: pass a new folder.")


def write_export(
    out: Path,
    weights: dict[str, torch.Tensor],
    config: dict,
    clip_config: dict,
    subtexts: Path,
    card: str,
) -> Path:
    """Write an exported model folder (see the module doc), all or nothing: into a hidden
    sibling folder, renamed into place once whole; an existing export is set aside, the new
    one renamed in, and the old one removed, so a kill at any point leaves the old export or
    the new one (`settled_export` finds the old one in the instant between the renames),
    never a mix. What killed exports left beside `out` is removed first. -> `out`."""
    from safetensors.torch import save as save_safetensors

    out = Path(out)
    check_export_out(out)
    new, replaced = _staging_names(out)
    previous = settled_export(out)
    if previous != out:  # a kill between the renames: the old export comes back first
        previous.rename(out)
    for stale in [*out.parent.glob(new + "*"), *out.parent.glob(replaced + "*")]:
        shutil.rmtree(stale, ignore_errors=True)
    staging = out.parent / f"{new}{secrets.token_hex(4)}"
    tensors = {name: t.detach().cpu().contiguous() for name, t in weights.items()}
    try:
        staging.mkdir(parents=True)
        atomic_write(
            staging / WEIGHTS_FILE,
            lambda fh: fh.write(save_safetensors(tensors, {"format": "pt"})),
        )
        atomic_write_json(staging / config["clip"]["config_file"], clip_config)
        atomic_write(staging / SUBTEXTS_FILE, lambda fh: fh.write(Path(subtexts).read_bytes()))
        atomic_write_json(staging / CONFIG_FILE, config)
        atomic_write_text(staging / CARD_FILE, card)
        old = out.parent / f"{replaced}{secrets.token_hex(4)}"
        if out.exists():
            out.rename(old)
        staging.rename(out)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise UserError(f"could not write {out} ({os_reason(exc)}); nothing was changed.") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return out


def _read_json_file(path: Path, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(
            f"{path} cannot be read as {what} ({first_line(exc, 100)}); download or export "
            "the model again."
        ) from exc


# The sections of an export's config.json that loading reads, and their JSON types.
_SECTIONS = {"training": dict, "architecture": dict, "clip": dict, "epoch": int, "classes": list}
_CLIP_SECTIONS = ("embed_dim", "vision_cfg", "text_cfg")  # what open_clip registers a config by


def read_export_config(directory: Path) -> dict:
    """An exported folder's config.json, checked: its format and version, the sections
    loading reads, and that clip_config.json is a JSON object; one sentence naming the file
    at fault otherwise."""
    directory = Path(directory)
    path = directory / CONFIG_FILE
    config = _read_json_file(path, "JSON")
    if not isinstance(config, dict) or config.get("format") != EXPORT_FORMAT:
        raise UserError(f"{path} is not a Storyboard model config (format {EXPORT_FORMAT!r}).")
    version = config.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise UserError(f"{path} has version {version!r}, not a whole number.")
    if version > EXPORT_VERSION:
        raise UserError(
            f"{directory} was exported by a newer Storyboard (format version {version}); "
            "update this one."
        )
    for name, kind in _SECTIONS.items():
        if not isinstance(config.get(name), kind):
            raise UserError(
                f"{path} has no {name!r} section ({kind.__name__}): it is damaged; download "
                "or export the model again."
            )
    for section, name in (("clip", "model_id"), ("clip", "pretrained_id"), ("training", "dataset")):
        if not isinstance(config[section].get(name), str):
            raise UserError(f"{path} names no {name} in its {section!r} section: it is damaged.")
    clip_config = _read_json_file(directory / CLIP_CONFIG_FILE, "JSON")
    # open_clip ignores a config without these (and would build one registered earlier)
    if not isinstance(clip_config, dict) or not set(_CLIP_SECTIONS) <= set(clip_config):
        raise UserError(
            f"{directory / CLIP_CONFIG_FILE} is not an open_clip model config (it needs "
            f"{', '.join(_CLIP_SECTIONS)}); download or export the model again."
        )
    return config


def _unreadable(path: Path, exc: Exception) -> UserError:
    return UserError(
        f"{path} is not a readable safetensors file ({first_line(exc, 100)}); download or "
        "export the model again."
    )


def weight_shapes(directory: Path) -> dict[str, tuple[int, ...]]:
    """The name and shape of every tensor in an export's model.safetensors, from its header
    alone (no tensor is read)."""
    from safetensors import SafetensorError, safe_open

    path = Path(directory) / WEIGHTS_FILE
    try:
        with safe_open(path, "pt") as weights:
            return {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}
    except (OSError, SafetensorError) as exc:
        raise _unreadable(path, exc) from exc


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """An exported folder's weights (safetensors: no code can run)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(directory) / WEIGHTS_FILE
    try:
        return load_file(path)
    except (OSError, SafetensorError) as exc:
        raise _unreadable(path, exc) from exc


def hub_snapshot(source: str) -> Path:
    """The local folder of `hf-hub:ORG/REPO[@REVISION]`: from the Hugging Face cache with no
    network call, else downloaded once the Hub answers (`storyboard_common.hub`)."""
    from huggingface_hub import snapshot_download

    repo, _, revision = source[len(HUB_PREFIX) :].partition("@")

    def fetch(cache_only: bool) -> str:
        return snapshot_download(
            repo, revision=revision or None, allow_patterns=HUB_FILES, local_files_only=cache_only
        )

    instead = "pass the model folder"
    try:
        folder = hub.cache_first(fetch, repo, source, instead, revision=revision or None)
    except UserError:
        raise
    except Exception as exc:  # the Hub answered, but the download failed
        raise UserError(
            f"{source} could not be fetched from the Hugging Face Hub ({type(exc).__name__}: "
            f"{first_line(exc, 120)}); check that you may download it, or {instead}."
        ) from exc
    if not is_export(Path(folder)):
        raise UserError(
            f"{source} holds no {WEIGHTS_FILE} and {CONFIG_FILE}: not a Storyboard "
            "model exported with `trainer export`."
        )
    return Path(folder)


def subtext_source(subtexts: Path) -> dict:
    """Where a sub-text artifact's texts came from, as its metadata records it: the
    settings of its scoring and which LLMs wrote the chosen sets (None for an artifact
    scored before `score` recorded them)."""
    subtexts = Path(subtexts)
    meta = ArtifactMeta.from_dict(read_meta(subtexts), subtexts)  # the schema only
    return {
        "n_subtexts": meta.n_subtexts,
        "template": meta.template,
        "alpha": meta.alpha,
        "beta": meta.beta,
        "fallback_classes": list(meta.fallback_classes),
        "llms": meta.llms,
    }


# The run's metrics in the card: (key, name in the table, the Hub's metric type).
_CARD_METRICS = (
    ("top1", "top-1", "accuracy"),
    ("top5", "top-5", "top-5-accuracy"),
    ("mean_class_acc", "mean class accuracy", "mean-class-accuracy"),
    ("map", "mAP", "map"),
)


def _metrics_rows(metrics: dict | None) -> list[str]:
    values = [(name, (metrics or {}).get(key)) for key, name, _ in _CARD_METRICS]
    values.append(("test videos", (metrics or {}).get("n")))
    rows = [
        f"| {name} | {value:.4f} |" if isinstance(value, float) else f"| {name} | {value} |"
        for name, value in values
        if value is not None
    ]
    return rows or ["| (not evaluated) | |"]


def _card_data(config: dict, base_model: str | None, model_name: str):
    """The card's Hub metadata: license, base model, tags, dataset, and the run's metrics as
    a `model-index` results block."""
    from huggingface_hub import EvalResult, ModelCardData

    dataset, metrics = config["dataset"], config["metrics"] or {}
    results = [
        EvalResult(
            task_type="video-classification",
            dataset_type=dataset,
            dataset_name=dataset,
            dataset_split="test",
            metric_type=metric_type,
            metric_name=name,
            metric_value=metrics[key],
        )
        for key, name, metric_type in _CARD_METRICS
        if metrics.get(key) is not None
    ]
    return ModelCardData(
        license="mit",
        library_name="storyboard",
        pipeline_tag="video-classification",
        base_model=base_model,
        tags=["video-classification", "action-recognition", "clip", "storyboard"],
        datasets=[dataset],
        metrics=[result.metric_type for result in results] or None,
        model_name=model_name,
        eval_results=results or None,
    )


def model_card(config: dict) -> str:
    """The exported folder's README.md, built as a `huggingface_hub.ModelCard`: Hub metadata
    (license, base model, dataset, the results as `model-index`), data and protocol,
    results, sub-text source, model, how to load it, citation.

    Long because it is the card's text, kept as one template in reading order."""
    from huggingface_hub import ModelCard

    run, arch, clip, texts = (
        config["training"],
        config["architecture"],
        config["clip"],
        config["subtexts"],
    )
    protocol = (f"{run['shots']}-shot" if run.get("shots") else "supervised") + (
        f", split {run['split']}" if has_folds(config["dataset"]) else ""
    )
    llms = "not recorded (the artifact was scored before `score` recorded them)"
    if texts["llms"] is not None:
        written = (f"{name} ({count} classes)" for name, count in texts["llms"].items())
        llms = ", ".join(written) or "none (every class has its global text only)"
    title = f"Storyboard {arch['aggregation']} model: {config['dataset']}, {protocol}"
    base_model = hub_base_model(clip["model_id"], clip["pretrained_id"])
    base_note = (
        f"built on `{base_model}` (the card's `base_model`)"
        if base_model
        else "no `base_model` in the metadata: these CLIP weights are on no Hugging Face Hub "
        "repository (a local checkpoint, a tag open_clip fetches by URL, or none)"
    )
    lines = [
        f"# {title}",
        "",
        "A storyboard-guided video action recognition model: CLIP frame features weighted by "
        "the class name and its sub-texts (atomic actions written by an LLM and chosen by "
        "TPP), trained with Storyboard's `python -m trainer run`.",
        "",
        "## Data and protocol",
        "",
        f"* dataset: {config['dataset']} ({len(config['classes'])} classes), {protocol}",
        f"* frames per clip: {arch['frames']}; test views: {config['evaluation']['clips']} "
        f"clips x {config['evaluation']['crops']} crops",
        f"* training: {run['epochs']} epochs, batch {run['batch_size']}, lr {run['lr']}, "
        f"seed {run['seed']}, visual tower "
        f"{'frozen' if arch['freeze_backbone'] else 'trained'}",
        f"* this checkpoint: `{config['checkpoint']}` (after epoch {config['epoch']})",
        "",
        "## Results (from the run's own evaluation)",
        "",
        "| metric | value |",
        "|---|---|",
        *_metrics_rows(config["metrics"]),
        "",
        "## Sub-texts",
        "",
        f"{texts['n_subtexts']} sub-texts per class, global text template "
        f"`{texts['template']}`, TPP scaling alpha `{texts['alpha']}`, beta `{texts['beta']}`; "
        f"written by: {llms}. Classes without a valid set (global text only): "
        f"{texts['fallback_classes'] or 'none'}. The texts and their CLIP embeddings are in "
        f"`{SUBTEXTS_FILE}`.",
        "",
        "## Model",
        "",
        f"* CLIP: `{clip['model_id']}` with weights `{clip['pretrained_id']}` (architecture "
        f"in `{CLIP_CONFIG_FILE}`; every weight the model uses is in `{WEIGHTS_FILE}`); "
        f"{base_note}",
        f"* aggregation `{arch['aggregation']}`, {arch['temporal_layers']} temporal layers, "
        f"{arch['attention_heads']} attention head(s), tau coarse {arch['tau_coarse']}, "
        f"tau fine {arch['tau_fine']}, input {arch['image_size']} px",
        "",
        "## How to load",
        "",
        "```",
        "python -m trainer predict VIDEO.mp4 --checkpoint hf-hub:ORG/REPO   # or this folder",
        f"python -m trainer eval --checkpoint hf-hub:ORG/REPO --dataset {config['dataset']} "
        "--root DATA",
        "```",
        "",
        "Another dataset's classes take `--subtexts` (its `subtexts.parquet`, scored with the "
        'same CLIP). In Python: `trainer.run_models.load_run("hf-hub:ORG/REPO")` gives the model '
        "and its class texts. The folder holds no pickle: weights are safetensors.",
        "",
        "## Citation",
        "",
        "The method this model implements:",
        "",
        "```bibtex",
        paper_bibtex(),
        "```",
        "",
    ]
    metadata = _card_data(config, base_model, title).to_yaml()
    return str(ModelCard(f"---\n{metadata}\n---\n\n" + "\n".join(lines)))
