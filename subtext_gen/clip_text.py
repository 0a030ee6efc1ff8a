"""The one CLIP loader of the project, and pooled and word-token text features.

`load_clip` is used by both stages (the trainer takes the visual tower from it), so a
model name, a JSON config, a tag or a local checkpoint resolves the same way everywhere.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from storyboard_common.device import resolve_device
from storyboard_common.errors import UserError, unsafe_load_reason

from .resources import resolve_shipped

NO_WEIGHTS = ("none", "")


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


def clip_files(clip_model: str, clip_pretrained: str | None) -> dict[str, str]:
    """The settings of a CLIP that name local files, as given: `clip_model` when it is a
    model-config JSON (not a shipped `data/...` one, which is found from any folder),
    `clip_pretrained` when it is a checkpoint. open_clip names, tags and `hf-hub:` or
    `local-dir:` schemas are not files. `clip_identity` does not depend on the folder a file
    is named from (a config by its stem, a checkpoint by its name and content)."""
    files = {}
    if clip_model.endswith(".json") and resolve_shipped(clip_model) == clip_model:
        files["clip_model"] = clip_model
    pretrained = (clip_pretrained or "none").strip()
    if pretrained.lower() not in NO_WEIGHTS and _looks_like_path(pretrained):
        files["clip_pretrained"] = pretrained
    return files


def _register_config(clip_model: str) -> str:
    import open_clip

    if not clip_model.endswith(".json"):
        return clip_model
    path = Path(resolve_shipped(clip_model))
    if not path.is_file():
        raise UserError(f"--clip-model config file not found: {path}.")
    open_clip.add_model_config(path)
    return path.stem


def load_clip(
    clip_model: str = "ViT-B-16",
    clip_pretrained: str | None = "openai",
    device: str | None = "auto",
) -> LoadedClip:
    """Build an open_clip model from a name, `hf-hub:`/`local-dir:` or a JSON config, with
    weights from a tag, a local checkpoint or none; frozen, in eval mode, on `device`."""
    import open_clip

    torch_device = resolve_device(device)
    name = _register_config(clip_model)
    pretrained = (clip_pretrained or "none").strip()
    weights = None if pretrained.lower() in NO_WEIGHTS else pretrained
    if name.startswith(("hf-hub:", "local-dir:")):
        weights = None  # the schema names its own weights
    if weights and _looks_like_path(weights) and not Path(weights).is_file():
        raise UserError(f"--clip-pretrained checkpoint not found: {weights}.")
    if not name.startswith(("hf-hub:", "local-dir:")) and name not in open_clip.list_models():
        raise UserError(
            f"unknown --clip-model {clip_model!r}: give an open_clip name (e.g. ViT-B-16), "
            "hf-hub:ORG/REPO, local-dir:PATH or a model-config JSON file."
        )
    logging.disable(logging.ERROR)  # open_clip logs what the UserError below says better
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=weights, device=torch_device
        )
    except Exception as exc:
        if weights and _looks_like_path(weights):
            raise UserError(_checkpoint_problem(weights, clip_model, exc)) from exc
        if not isinstance(exc, RuntimeError):
            raise
        if weights:
            raise UserError(
                f"CLIP weights {name}/{weights} are not available here ({str(exc)[:120]}...): "
                "download them once on a machine with network (they go to the Hugging Face "
                "cache) or pass --clip-pretrained /path/to/checkpoint."
            ) from exc
        raise UserError(
            f"could not build CLIP {clip_model!r} with weights {pretrained!r}: {exc}"
        ) from exc
    finally:
        logging.disable(logging.NOTSET)
    model.eval().requires_grad_(False)
    model_id, pretrained_id = clip_identity(clip_model, clip_pretrained)
    return LoadedClip(
        model=model,
        tokenizer=open_clip.get_tokenizer(name),
        preprocess=preprocess,
        model_name=name,
        model_id=model_id,
        pretrained_id=pretrained_id,
        embed_dim=int(_text_tower(model).text_projection.shape[-1]),
        device=torch_device,
    )


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
