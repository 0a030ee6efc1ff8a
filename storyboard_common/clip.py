"""The one CLIP loader of the project, and pooled and word-token text features.

`load_clip` is used by both stages (the trainer takes the visual tower from it), so a
model name, a JSON config, a tag or a local checkpoint resolves the same way everywhere.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from storyboard_common import hub
from storyboard_common.device import resolve_device
from storyboard_common.errors import UserError, first_line, unsafe_load_reason

from .resources import data_path, resolve_shipped

NO_WEIGHTS = ("none", "")
HUB_PREFIX, LOCAL_PREFIX = "hf-hub:", "local-dir:"


@dataclass
class LoadedClip:
    model: torch.nn.Module
    tokenizer: object
    preprocess: object  # the evaluation image transform
    model_name: str  # the name open_clip knows the architecture by
    model_id: str  # what artifacts record as storyboard.clip_model
    pretrained_id: str  # what artifacts record as storyboard.clip_pretrained
    embed_dim: int
    device: torch.device

    @property
    def random_weights(self) -> bool:
        """Built with no weights at all (`--clip-pretrained none` of an architecture that
        does not name its own): both towers are randomly initialised."""
        return self.pretrained_id == "none" and not self.model_id.startswith(
            (HUB_PREFIX, LOCAL_PREFIX)
        )

    @property
    def image_size(self) -> int:
        """The side of the square images the visual tower takes."""
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, tuple | list) else size)


def _looks_like_path(value: str) -> bool:
    return "/" in value or "\\" in value or value.endswith((".pt", ".pth", ".bin", ".safetensors"))


def _file_fingerprint(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return f"{path.name}@{digest.hexdigest()[:12]}"


def clip_identity(clip_model: str, clip_pretrained: str | None) -> tuple[str, str]:
    """What artifacts record for a CLIP: stable across machines, different for other weights.

    A JSON config is known by its stem (the name open_clip registers it under); a local
    checkpoint by its file name and a hash of its content.
    """
    model_id = Path(clip_model).stem if clip_model.endswith(".json") else clip_model
    pretrained = (clip_pretrained or "none").strip()
    if pretrained.lower() in NO_WEIGHTS:
        return model_id, "none"
    if _looks_like_path(pretrained) and Path(pretrained).is_file():
        return model_id, _file_fingerprint(Path(pretrained))
    return model_id, pretrained


def hub_base_model(model_id: str, pretrained_id: str) -> str | None:
    """The Hugging Face Hub repository a CLIP's weights come from (a model card's
    `base_model`): `hf-hub:ORG/REPO` itself, or the repository open_clip fetches a pretrained
    tag from (e.g. `timm/vit_base_patch16_clip_224.openai`); None for weights that are on no
    Hub repository (a local checkpoint, `local-dir:`, a tag open_clip fetches by URL, none)."""
    import open_clip

    if model_id.startswith(HUB_PREFIX):
        return model_id[len(HUB_PREFIX) :]
    repo = open_clip.get_pretrained_cfg(model_id, pretrained_id).get("hf_hub") or ""
    return repo.strip("/") or None


def clip_files(clip_model: str, clip_pretrained: str | None) -> dict[str, str]:
    """The settings of a CLIP that name local files, as given: `clip_model` when it is a
    model-config JSON (not a shipped `storyboard_common/data/...` one, found from any folder),
    `clip_pretrained` when it is a checkpoint. open_clip names, tags and `hf-hub:` or
    `local-dir:` schemas are not files. `clip_identity` does not depend on the folder a file
    is named from (a config by its stem, a checkpoint by its name and content)."""
    files = {}
    if clip_model.endswith(".json") and resolve_shipped(clip_model) == Path(clip_model):
        files["clip_model"] = clip_model
    pretrained = (clip_pretrained or "none").strip()
    if pretrained.lower() not in NO_WEIGHTS and _looks_like_path(pretrained):
        files["clip_pretrained"] = pretrained
    return files


@functools.cache
def _register_shipped() -> None:
    """The shipped model configs go by their names too (`--clip-model TinyCLIP-test`)."""
    import open_clip

    open_clip.add_model_config(data_path("clip"))


def _register_config(clip_model: str) -> str:
    import open_clip

    _register_shipped()
    if not clip_model.endswith(".json"):
        return clip_model
    path = resolve_shipped(clip_model)
    if not path.is_file():
        raise UserError(f"--clip-model config file not found: {path}.")
    # Checked before open_clip registers it: a file it cannot parse would break every later
    # load of this process (open_clip rereads all registered files), one without these keys
    # it skips silently.
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"the CLIP model config {path} is not JSON ({first_line(exc)}).") from exc
    needed = ("embed_dim", "vision_cfg", "text_cfg")
    missing = [key for key in needed if not isinstance(config, dict) or key not in config]
    if missing:
        raise UserError(
            f"the CLIP model config {path} is not an open_clip model config: it lacks "
            f"{', '.join(missing)}."
        )
    open_clip.add_model_config(path)
    return path.stem


def _check_local_dir(name: str) -> None:
    """`local-dir:FOLDER` must hold what open_clip loads from it: without weights open_clip
    would build a randomly initialised model and only log a warning."""
    folder = Path(name[len(LOCAL_PREFIX) :])
    if not folder.is_dir():
        raise UserError(f"--clip-model {name}: the folder {folder} does not exist.")
    weights = [p for pattern in ("*.safetensors", "*.bin", "*.pth") for p in folder.glob(pattern)]
    if not (folder / _OPEN_CLIP_CONFIG).is_file() or not weights:
        raise UserError(
            f"--clip-model {name} holds no open_clip model (it needs {_OPEN_CLIP_CONFIG} and a "
            f"weights file such as {_OPEN_CLIP_WEIGHTS[0]}); pass a folder open_clip saved."
        )


@contextlib.contextmanager
def _cached_tag(name: str, tag: str):
    """open_clip's pretrained `tag` of `name`, read from the Hugging Face cache where it is
    there; else, once the Hub answers, downloaded by open_clip; else the UserError.

    open_clip asks the Hub about a tag's file on every load, even a cached one, and retries
    for minutes with no network: the cached file is handed to it as the tag's `file`, which
    it reads before any download, for the duration of the load."""
    import open_clip
    from open_clip.constants import HF_WEIGHTS_NAME
    from open_clip.pretrained import _get_safe_alternatives

    cfg = open_clip.get_pretrained_cfg(name, tag)  # open_clip's own entry
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise UserError(
            f"--clip-pretrained {tag!r} is neither a checkpoint file nor a pretrained tag of "
            f"{name} (its tags: {', '.join(tags) or 'none'}); pass a tag, a checkpoint or none."
        )
    found = None
    if cfg.get("hf_hub"):  # else a plain URL (no tag of open_clip 3.3): open_clip fetches it
        repo, filename = os.path.split(cfg["hf_hub"])  # "org/repo/": the default file
        filename = filename or HF_WEIGHTS_NAME
        # The names open_clip tries, in its order: a safetensors twin first.
        found = hub.cached_file(repo, [*_get_safe_alternatives(filename), filename])
        if found is None:
            hub.require_hub(
                repo,
                f"CLIP weights {name} {tag} (file {filename} of {repo})",
                "pass --clip-pretrained /path/to/checkpoint",
                files=[filename],
            )
    if found is None:
        yield
        return
    cfg["file"] = found
    try:
        yield
    finally:
        del cfg["file"]


_OPEN_CLIP_CONFIG = "open_clip_config.json"
_OPEN_CLIP_TOKENIZER = [
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab*",
    "merges.txt",
    "*.model",
]
_OPEN_CLIP_WEIGHTS = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]


def _hub_clip(name: str) -> str:
    """`hf-hub:ORG/REPO` as `local-dir:` its snapshot in the Hugging Face cache (downloaded
    when missing: the config, the tokenizer files and one weights file), so that open_clip
    reads all of it from disk."""
    from huggingface_hub import snapshot_download

    repo = name[len(HUB_PREFIX) :]

    def snapshot(cache_only: bool) -> str:
        for weights in _OPEN_CLIP_WEIGHTS:  # safetensors first, as open_clip prefers it
            patterns = [_OPEN_CLIP_CONFIG, *_OPEN_CLIP_TOKENIZER, weights]
            folder = Path(
                snapshot_download(repo, allow_patterns=patterns, local_files_only=cache_only)
            )
            if (folder / _OPEN_CLIP_CONFIG).is_file() and (folder / weights).is_file():
                return f"{LOCAL_PREFIX}{folder}"
        if cache_only:
            raise FileNotFoundError(folder)  # partly cached: the rest comes from the Hub
        raise UserError(
            f"--clip-model {name} holds no open_clip model ({_OPEN_CLIP_CONFIG} and "
            f"{' or '.join(_OPEN_CLIP_WEIGHTS)}): pass an open_clip repository."
        )

    return hub.cache_first(
        snapshot, repo, f"CLIP {name}", "pass --clip-model local-dir:/path/to/a/local/copy"
    )


def load_clip(
    clip_model: str = "ViT-B-16",
    clip_pretrained: str | None = "openai",
    device: str | None = "auto",
) -> LoadedClip:
    """Build an open_clip model from a name (open_clip's or a shipped config's),
    `hf-hub:`/`local-dir:` or a JSON config, with weights from a tag, a local checkpoint or
    none; frozen, in eval mode, on `device`. Hub weights come from the Hugging Face cache
    with no network call, or fail in seconds where neither the cache nor the Hub has them."""
    import open_clip

    torch_device = resolve_device(device)
    name = _register_config(clip_model)
    pretrained = (clip_pretrained or "none").strip()
    weights = None if pretrained.lower() in NO_WEIGHTS else pretrained
    if name.startswith((HUB_PREFIX, LOCAL_PREFIX)):
        weights = None  # the schema names its own weights
    if weights and _looks_like_path(weights) and not Path(weights).is_file():
        raise UserError(f"--clip-pretrained checkpoint not found: {weights}.")
    if not name.startswith((HUB_PREFIX, LOCAL_PREFIX)) and name not in open_clip.list_models():
        shipped = ", ".join(sorted(p.stem for p in data_path("clip").glob("*.json")))
        raise UserError(
            f"unknown --clip-model {clip_model!r}: give an open_clip name (e.g. ViT-B-16), a "
            f"shipped config ({shipped}), hf-hub:ORG/REPO, local-dir:PATH or a model-config "
            "JSON file."
        )
    source = _hub_clip(name) if name.startswith(HUB_PREFIX) else name
    config_file = None  # the user's JSON the architecture comes from: named if it fails
    if source.startswith(LOCAL_PREFIX):
        _check_local_dir(source)
        config_file = Path(source[len(LOCAL_PREFIX) :]) / _OPEN_CLIP_CONFIG
    elif clip_model.endswith(".json"):
        config_file = resolve_shipped(clip_model)
    tag = weights and not _looks_like_path(weights)
    logging.disable(logging.ERROR)  # open_clip logs what the UserError below says better
    try:
        with _cached_tag(name, weights) if tag else contextlib.nullcontext():
            model, _, preprocess = open_clip.create_model_and_transforms(
                source, pretrained=weights, device=torch_device
            )
    except Exception as exc:
        if config_file and isinstance(exc, _BAD_CONFIG) and not isinstance(exc, UnicodeDecodeError):
            raise UserError(
                f"the CLIP model config {config_file} does not build a model "
                f"({type(exc).__name__}: {first_line(exc)}); check its widths, heads and "
                "head_width."
            ) from exc
        if weights and _looks_like_path(weights):
            raise UserError(_checkpoint_problem(weights, clip_model, exc)) from exc
        if not isinstance(exc, RuntimeError):
            raise
        raise UserError(
            f"could not build CLIP {clip_model!r} with weights {pretrained!r}: {first_line(exc)}"
        ) from exc
    finally:
        logging.disable(logging.NOTSET)
    model.eval().requires_grad_(False)
    model_id, pretrained_id = clip_identity(clip_model, clip_pretrained)
    return LoadedClip(
        model=model,
        tokenizer=open_clip.get_tokenizer(source),
        preprocess=preprocess,
        model_name=source,
        model_id=model_id,
        pretrained_id=pretrained_id,
        embed_dim=int(_text_tower(model).text_projection.shape[-1]),
        device=torch_device,
    )


# What open_clip and torch raise building a model from settings that do not make one (a
# missing `head_width` gives zero heads, an unknown key a TypeError); a checkpoint that does
# not fit is a RuntimeError or an unpickling error instead.
_BAD_CONFIG = (ValueError, TypeError, KeyError, AttributeError, ZeroDivisionError)
_NOT_A_CHECKPOINT = (
    "PytorchStreamReader",
    "zip archive",
    "invalid load key",
    "Ran out of input",
    "Weights only load failed",
    "pickle",
    "truncated",
)
_WRONG_MODEL = ("size mismatch", "Missing key", "Unexpected key")


def _checkpoint_problem(weights: str, clip_model: str, exc: Exception) -> str:
    """One sentence on why the checkpoint file `weights` did not load into `clip_model`:
    it holds code (refused unexecuted), is not a PyTorch checkpoint at all, or holds
    weights of another architecture."""
    import pickle

    unsafe = unsafe_load_reason(exc)
    if unsafe is not None:
        return (
            f"--clip-pretrained {weights} holds {unsafe}, not only tensors: loading it could "
            "run code, so it is refused (nothing in it was run); pass a checkpoint of tensors "
            "(a state dict, or .safetensors), a pretrained tag or none."
        )
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = " ".join(lines)
    if isinstance(exc, (pickle.UnpicklingError, EOFError, UnicodeDecodeError)) or any(
        marker in text for marker in _NOT_A_CHECKPOINT
    ):
        telling = ("PytorchStreamReader", "invalid load key", "Ran out of input", "Unsupported")
        reason = next(
            (line for line in lines if any(m in line for m in telling)), type(exc).__name__
        )
        reason = reason.split(". ")[0].rstrip(".")
        return (
            f"--clip-pretrained {weights} is not a PyTorch checkpoint (it cannot be unpickled: "
            f"{reason[:100]}); pass a CLIP checkpoint file, a pretrained tag or none."
        )
    detail = next(
        (line for line in lines if any(m in line for m in _WRONG_MODEL)),
        lines[0] if lines else type(exc).__name__,
    )
    return (
        f"--clip-pretrained {weights} is not a checkpoint of --clip-model {clip_model} (its "
        f"weights do not fit: {detail[:140].rstrip('.')}); pass the --clip-model it was "
        "trained as."
    )


def _text_tower(model: torch.nn.Module) -> torch.nn.Module:
    """The causal CLIP text transformer (CLIP itself or its `.text`), which has SOT/EOT tokens."""
    tower = getattr(model, "text", model)
    needed = (
        "token_embedding",
        "positional_embedding",
        "transformer",
        "ln_final",
        "text_projection",
        "text_pool_type",
    )
    if (
        not all(hasattr(tower, a) for a in needed)
        or getattr(tower, "attn_mask", None) is None
        or getattr(tower, "cls_emb", None) is not None
        or tower.text_pool_type not in ("argmax", "eos")
    ):
        raise UserError(
            f"{type(model).__name__} has no causal CLIP text transformer with an EOT token: "
            "word-token features need a CLIP-style text tower (e.g. ViT-B-16)."
        )
    return tower


def _project(tower: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    proj = tower.text_projection
    if proj is None:
        return x
    return proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj


def _eot_positions(tower: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    if tower.text_pool_type == "argmax":  # EOT has the largest id in CLIP's BPE vocabulary
        return ids.argmax(dim=-1)
    return (ids == tower.text_eos_id).int().argmax(dim=-1)


def _last_layer(tower: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """`ln_final` outputs [B, L, W], as in `encode_text`, for sequences cut after the last EOT.

    The attention mask is causal, so the padding after EOT cannot change any token before
    it: cutting it gives the same features for a fraction of the compute.
    """
    length = ids.shape[1]
    cast = tower.transformer.get_cast_dtype()
    x = tower.token_embedding(ids).to(cast) + tower.positional_embedding[:length].to(cast)
    x = tower.transformer(x, attn_mask=tower.attn_mask[:length, :length])
    return tower.ln_final(x)


def token_states(model: torch.nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Projected last-layer states [B, L, D] of token ids [B, context] (cut after the last
    EOT) and each text's EOT position [B]: the pooled feature of text b is
    `states[b, eot[b]]`, its word tokens `states[b, 1:eot[b]]`. Differentiable (the world
    CLIP's token-level objective trains through it); `encode_texts` runs it frozen."""
    tower = _text_tower(model)
    eot = _eot_positions(tower, ids)
    length = int(eot.max()) + 1 if len(ids) else 1
    return _project(tower, _last_layer(tower, ids[:, :length])), eot


def context_length(clip: LoadedClip) -> int:
    """The tokens CLIP's text tower reads of a text, SOT and EOT included (77 for CLIP's)."""
    return int(clip.tokenizer.context_length)


def tokens_cut(clip: LoadedClip, texts: Sequence[str]) -> np.ndarray:
    """How many tokens the tokenizer cuts from the end of each text [B] to fit CLIP's context
    (`context_length`), 0 for a text that fits: the texts tokenized again with a context long
    enough for each (a token is at least one UTF-8 byte) and their EOT positions compared."""
    if not len(texts):
        return np.zeros(0, dtype=np.int64)
    context = context_length(clip)
    longest = max(len(text.encode("utf-8")) for text in texts) + 2  # with SOT and EOT
    ids = clip.tokenizer(list(texts), context_length=max(context, longest))
    lengths = _eot_positions(_text_tower(clip.model), ids) + 1
    return (lengths - context).clamp(min=0).numpy()


@dataclass(frozen=True)
class TextFeatures:
    """Pooled EOT features [B, D] and, when asked for, each text's word tokens [W_i, D]."""

    pooled: np.ndarray
    tokens: list[np.ndarray] | None


@torch.inference_mode()
def encode_texts(
    clip: LoadedClip, texts: Sequence[str], batch_size: int = 256, with_tokens: bool = False
) -> TextFeatures:
    """Encode texts with the frozen text tower, in batches, in the joint space (not normalised).

    The pooled feature is the projected EOT token (what `encode_text` returns); word tokens
    are the tokens strictly between SOT and EOT, after `ln_final`, projected with
    `text_projection`. Texts are batched by token length so little padding is computed.
    """
    tower = _text_tower(clip.model)
    ids = clip.tokenizer(list(texts)) if len(texts) else torch.zeros(0, 1, dtype=torch.long)
    eot = _eot_positions(tower, ids)
    order = torch.argsort(eot, stable=True)
    pooled = torch.zeros(len(texts), clip.embed_dim)
    tokens: list[np.ndarray | None] = [None] * len(texts)
    for start in range(0, len(texts), batch_size):
        rows = order[start : start + batch_size]
        hidden, ends = token_states(clip.model, ids[rows].to(clip.device))
        hidden, ends = hidden.float().cpu(), ends.cpu()
        pooled[rows] = hidden[torch.arange(len(rows)), ends]
        if with_tokens:
            for i, row in enumerate(rows.tolist()):
                tokens[row] = hidden[i, 1 : int(ends[i])].numpy()
    return TextFeatures(pooled=pooled.numpy(), tokens=tokens if with_tokens else None)
