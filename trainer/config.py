"""What surrounds the settings (`trainer.settings.RunConfig`): config files (`--config`),
the paper's settings as named presets (shipped config files, `trainer/configs/<name>.yaml`),
what `--resume` may change, and the input paths a run records.

The paper builds on BIKE and keeps its recipe where it says nothing else; presets take the
values of BIKE's public configs (ViT-B/16 where the paper's baseline uses it): AdamW,
lr 5e-5 for the new modules and x0.1 for the CLIP backbone, weight decay 0.2, cosine
schedule with 5 warm-up epochs. `batch_size` is the global batch (all GPUs together);
gradient accumulation makes it up when a device cannot hold it.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from importlib.resources import files
from pathlib import Path

import yaml

from storyboard_common.clip import clip_files
from storyboard_common.errors import UserError, first_line
from storyboard_common.files import os_reason

from .paths import dataset_root, default_run_dir, default_subtexts
from .settings import RunConfig, declared, field_type, flag_name

# Settings that `run --resume` lets differ from the run's config.json: they change how fast
# or where the run goes, never its data, model, schedule or evaluation. Everything else is
# compared and a difference refused (`resume_differences`). Evaluation views (--clips,
# --crops) and --eval-every are compared too: the metrics already logged and the choice
# of best.pt would mix two evaluation protocols (evaluate other views with `eval`).
# The number of processes is not a setting: the checkpoint's layout check keeps the
# global batch (--batch-size, --micro-batch x processes) the run began with.
RESUME_MAY_CHANGE: dict[str, str] = {
    f.name: declared(f).resume_may_change
    for f in dataclasses.fields(RunConfig)
    if declared(f).resume_may_change
}

# Settings that name a file or folder a run reads (`Setting.moved_input`), with what their
# flag takes. A run records
# them as absolute paths (`absolute_paths`); one that has moved since is named anew with its
# flag (`check_recorded_inputs`).
INPUTS: dict[str, str] = {
    f.name: declared(f).moved_input
    for f in dataclasses.fields(RunConfig)
    if declared(f).moved_input
}


# The `list` dataset's files: relative to its root unless absolute.
LIST_INPUTS = ("train_list", "test_list", "class_list")


def resolved_config(cfg: RunConfig) -> RunConfig:
    """`cfg` as a run reads and records it: the defaults of its dataset root, sub-text
    artifact and run folder filled in, and every path absolute, so that `eval`, `predict`,
    `export` and `--resume` read the same files from any folder. The one place these
    defaults are chosen; everything after reads the resolved values."""
    return absolute_paths(
        dataclasses.replace(
            cfg,
            root=dataset_root(cfg.dataset, cfg.root),
            subtexts=subtexts_artifact(cfg),
            out=run_dir(cfg),
        )
    )


def subtexts_artifact(cfg: RunConfig) -> Path:
    """The sub-text artifact `cfg` reads: `--subtexts`, else its dataset's scored with its
    CLIP in the default place."""
    if cfg.subtexts is not None:
        return cfg.subtexts
    return default_subtexts(cfg.dataset, cfg.clip_model, cfg.clip_pretrained)


def run_dir(cfg: RunConfig) -> Path:
    """The run folder `cfg` writes: `--out`, else the default one under runs/."""
    return cfg.out if cfg.out is not None else default_run_dir(cfg)


def absolute(path: Path | str) -> Path:
    """`path` with `~` expanded, from this folder, links resolved."""
    return Path(path).expanduser().resolve()


def input_paths(settings: dict) -> dict[str, str]:
    """The inputs (`INPUTS`) that `settings` (JSON-like) set, as given: the CLIP's settings
    only where they name local files, not open_clip names or tags."""
    clip = clip_files(settings["clip_model"], settings["clip_pretrained"])
    return {
        name: str(settings[name])
        for name in INPUTS
        if settings.get(name) is not None and (name in clip or not name.startswith("clip_"))
    }


def absolute_paths(cfg: RunConfig) -> RunConfig:
    """`cfg` with every path it names absolute (`absolute`): what a run records, so that it
    reads the same files from any folder."""
    files = {name: absolute(value) for name, value in input_paths(dataclasses.asdict(cfg)).items()}
    for name in set(LIST_INPUTS) & set(files):  # relative to the dataset's root, not here
        files[name] = absolute(dataset_root(cfg.dataset, cfg.root) / getattr(cfg, name))
    clip = {
        name: str(files.pop(name)) for name in ("clip_model", "clip_pretrained") if name in files
    }
    out = None if cfg.out is None else absolute(cfg.out)
    return dataclasses.replace(cfg, **files, **clip, out=out)


def check_recorded_inputs(recorded: dict[str, str]) -> None:
    """One UserError sentence naming every one of a run's recorded inputs (name: path, as
    recorded; older runs recorded paths relative to a folder no longer known, read from this
    one) that no longer exists, with the flags that say where they are now: all at once,
    so a user moving several folders learns of them in one attempt."""
    gone = [name for name, path in recorded.items() if not absolute(path).exists()]
    if not gone:
        return
    paths = _listed([f"{flag_name(name)} {recorded[name]}" for name in gone])
    flags = _listed([f"{flag_name(name)} {INPUTS[name]}" for name in gone])
    exist = "exists" if len(gone) == 1 else "exist"
    raise UserError(f"the run's recorded {paths} no longer {exist}; pass {flags}.")


def _listed(parts: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"


def setting_differences(saved: dict, current: dict) -> list[tuple[str, str, str]]:
    """(name, old, new) as shown to a user for each setting outside RESUME_MAY_CHANGE that
    `saved` (a run's recorded settings) holds and `current` gives otherwise (both
    JSON-like)."""
    differences = []
    for f in dataclasses.fields(RunConfig):
        if f.name in RESUME_MAY_CHANGE or f.name not in saved:
            continue
        old, new = saved[f.name], current.get(f.name)
        if old != new:
            differences.append((f.name, _shown(old), _shown(new)))
    return differences


def resume_differences(saved: dict, current: dict) -> list[str]:
    """'--flag old -> new' for each setting outside RESUME_MAY_CHANGE that differs between a
    run's recorded settings (its checkpoint's) and the one given to resume it."""
    return [
        f"{flag_name(name)} {old} -> {new}"
        for name, old, new in setting_differences(saved, current)
    ]


def _shown(value) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


# The presets: shipped config files (package data, so a clone and a wheel hold the same),
# one per name, read like any `--config` file; `python -m trainer presets` lists them.
PRESETS_DIR = Path(str(files("trainer") / "configs"))

CONFIG_FORMATS = {".yaml": "YAML", ".yml": "YAML", ".json": "JSON"}


class DuplicateKey(ValueError):
    """A key a config file gives twice, with the lines that give it (where known)."""

    def __init__(self, key, lines: tuple[int, ...] = ()):
        super().__init__(key)
        self.key, self.lines = key, lines


class _YamlLoader(yaml.SafeLoader):
    """YAML 1.1 reads `5e-5` (an exponent without a dot) as text; YAML 1.2 and JSON read a
    number, as users writing a learning rate mean. A key given twice in one mapping is a
    `DuplicateKey` (PyYAML keeps the last silently); a merge (`<<`) may repeat keys."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first_line = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in first_line:
                        raise DuplicateKey(key, (first_line[key], line))
                    first_line[key] = line
                except TypeError:  # an unhashable key: PyYAML refuses it itself
                    continue
        return super().construct_mapping(node, deep)


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)

# What each field type of RunConfig takes from a config file, and how a refusal says it.
_FILE_TYPES: dict[type, tuple[tuple[type, ...], str]] = {
    str: ((str,), "text"),
    int: ((int,), "a whole number"),
    float: ((int, float), "a number"),
    bool: ((bool,), "true or false"),
    Path: ((str,), "a path"),
}

# Settings older runs recorded in config.json that no run could set to anything but these
# values (no flag set them): a config file may still hold them, and they are dropped.
RETIRED_SETTINGS = {"extra": {}, "fewshot_epoch_len": None}


def preset_files() -> dict[str, Path]:
    """Each shipped preset's name and file."""
    return {path.stem: path for path in sorted(PRESETS_DIR.glob("*.yaml"), key=lambda p: p.stem)}


def preset_file(name: str, config: Path | None = None) -> Path:
    """The file of the preset `name`, given by --preset or by the `preset:` of `config`."""
    shipped = preset_files()
    if name not in shipped:
        unknown = f"{config}: unknown preset" if config is not None else "unknown --preset"
        raise UserError(
            f"{unknown} {name!r}; known: {', '.join(shipped)} "
            "(`python -m trainer presets` shows their files)."
        )
    return shipped[name]


def read_config_file(path: Path) -> dict:
    """The settings a config file holds (YAML or JSON by its suffix; keys are RunConfig's
    fields, as a run's config.json names them), each checked against its field's type:
    paths come back as paths, numbers for float fields as floats. An unreadable file, an
    unknown key or a value of the wrong type is one UserError sentence naming the file
    (and the key)."""
    kind = CONFIG_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise UserError(
            f"--config {path} is neither YAML (.yaml, .yml) nor JSON (.json): name it by "
            "what it holds."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"--config {path} cannot be read ({os_reason(exc)}).") from exc
    except UnicodeDecodeError as exc:
        raise UserError(f"--config {path} is not UTF-8 text.") from exc
    try:
        if kind == "JSON":
            values = json.loads(text, object_pairs_hook=_unique_keys)
        else:
            values = yaml.load(text, Loader=_YamlLoader)
    except DuplicateKey as exc:
        lines = exc.lines or _json_key_lines(text).get(exc.key, ())
        where = f" (lines {lines[0]} and {lines[1]})" if len(lines) > 1 else ""
        where = f" (both on line {lines[0]})" if where and lines[0] == lines[1] else where
        raise UserError(
            f"--config {path} gives the key {exc.key!r} twice{where}; keep the one you mean."
        ) from None
    except (ValueError, yaml.YAMLError) as exc:
        raise UserError(f"--config {path} is not valid {kind} ({first_line(exc)}).") from exc
    if values is None:  # an empty YAML file: no settings
        values = {}
    if not isinstance(values, dict):
        raise UserError(
            f"--config {path} holds a {type(values).__name__}, not settings (key: value)."
        )
    types = {f.name: f for f in dataclasses.fields(RunConfig)}
    settings = {}
    for key, value in values.items():
        if key in RETIRED_SETTINGS and value == RETIRED_SETTINGS[key]:
            continue
        if key not in types:
            raise UserError(f"{path}: unknown key {key!r}{_known_as(str(key), types)}.")
        settings[key] = _file_value(path, key, value, types[key])
    return settings


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object's pairs as a dict; a key given twice is a `DuplicateKey` (json keeps
    the last silently)."""
    values = {}
    for key, value in pairs:
        if key in values:
            raise DuplicateKey(key)
        values[key] = value
    return values


def _json_key_lines(text: str) -> dict[str, list[int]]:
    """The lines of each key of the JSON object `text` at its top level (the settings):
    json's own scanner, key by key; {} where `text` is not such an object."""
    decoder, space = json.JSONDecoder(), re.compile(r"\s*")
    lines: dict[str, list[int]] = {}
    try:
        at = space.match(text).end()
        if text[at] != "{":
            return {}
        at = space.match(text, at + 1).end()
        while text[at] == '"':
            key, at = json.decoder.scanstring(text, at + 1)
            lines.setdefault(key, []).append(text.count("\n", 0, at) + 1)
            at = space.match(text, at).end() + 1  # past the colon
            _, at = decoder.raw_decode(text, space.match(text, at).end())
            at = space.match(text, at).end()
            at = space.match(text, at + 1).end() if text[at] == "," else at
    except (ValueError, IndexError):
        return lines
    return lines


def _known_as(key: str, names) -> str:
    """A hint for an unknown key: the setting a flag's name stands for, or a near name."""
    by_flag = {flag_name(name): name for name in names}
    name = by_flag.get("--" + key.replace("_", "-"))
    if name is None:
        near = difflib.get_close_matches(key, names, n=1)
        name = near[0] if near else None
    return f" (did you mean {name!r}?)" if name else ""


def _file_value(path: Path, key: str, value, f: dataclasses.Field):
    kind, optional = field_type(f)
    if value is None and optional:
        return None
    if key == "split" and type(value) is int:  # YAML reads `split: 1` as a number
        value = str(value)
    accepted, what = _FILE_TYPES[kind]
    if not isinstance(value, accepted) or (isinstance(value, bool) and kind is not bool):
        null = " or null" if optional else ""
        raise UserError(f"{path}: {key} must be {what}{null}, not {value!r}.")
    if kind is Path:
        return Path(value)
    return float(value) if kind is float else value


def resolve_config(
    preset: str | None, overrides: dict, config: Path | None = None, resume: bool = False
) -> RunConfig:
    """A preset's values, then a config file's (`--config`), then every flag the user set
    explicitly (`overrides` not None): flags win. A file may name a preset (`preset:`) to
    start from, which --preset replaces. A run's own config.json (its `out` is the folder
    holding it) replays that run elsewhere: it needs --out, or --resume to continue it."""
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(given) - {f.name for f in dataclasses.fields(RunConfig)}
    if unknown:
        raise UserError(f"unknown setting(s): {', '.join(sorted(unknown))}.")
    from_file = read_config_file(config) if config is not None else {}
    if from_file.get("preset") is not None and preset is None:
        preset = from_file["preset"]
        preset_file(preset, config)
    values = read_config_file(preset_file(preset)) if preset is not None else {}
    values.update(from_file)
    values.update(given)
    values["preset"] = preset
    recorded_out = from_file.get("out")
    if (
        recorded_out is not None
        and "out" not in given
        and not resume
        and absolute(recorded_out) == absolute(config).parent
    ):
        raise UserError(
            f"{config} records the run in {recorded_out}: pass --out DIR to replay it into "
            "a new folder, or --resume to continue that run."
        )
    try:
        return RunConfig(**values)
    except UserError as exc:
        raise _blame_file(exc, config, set(from_file) - set(given)) from None


def _blame_file(error: UserError, config: Path | None, keys: set[str]) -> UserError:
    """`error` (a RunConfig check, naming flags) as the config file's: naming the file and,
    for the flags it names whose values came from the file, the file's keys instead."""
    message, blamed = str(error), False
    for key in keys:
        flag = re.compile(rf"(?<![\w-]){re.escape(flag_name(key))}(?![\w-])")
        if flag.search(message) or ("_" in key and key in message):
            message, blamed = flag.sub(key, message), True
    return UserError(f"{config}: {message}") if blamed else error
