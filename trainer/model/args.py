"""The video model's record, `ModelArgs`, as nanoGPT keeps `model_args`: the model is built
from it (`video_clip.build_model`), checkpoints store it as it is (`model_args`, its
`asdict`) and exports as their `architecture`. Light on purpose (no torch).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from storyboard_common.errors import UserError

if TYPE_CHECKING:
    from storyboard_common.clip import LoadedClip


@dataclass(frozen=True)
class ModelArgs:
    """The head's and temporal module's settings (each a run setting of the same name), and
    the CLIP the model was built over."""

    aggregation: str
    temporal_layers: int
    attention_heads: int
    tau_coarse: float
    tau_fine: float
    freeze_backbone: bool
    frames: int  # the clip length the temporal module embeds
    grad_checkpointing: bool = False  # exports written before it was recorded: off
    image_size: int | None = None  # the CLIP's input size (pixels); None: not recorded
    clip: dict[str, str] | None = None  # the CLIP's {model_id, pretrained_id}; None: not recorded

    @classmethod
    def of_run(cls, settings, clip: LoadedClip) -> ModelArgs:
        """The record of a run's `settings` (a `RunConfig`) over the loaded `clip`."""
        return cls(
            **{name: getattr(settings, name) for name in RUN_SETTINGS},
            image_size=clip.image_size,
            clip={"model_id": clip.model_id, "pretrained_id": clip.pretrained_id},
        )

    @classmethod
    def from_stored(cls, record: dict, source: str) -> ModelArgs:
        """The record as checkpoints and exports store it: a checkpoint's `model_args` or an
        export's `architecture`; an older export's lacks `grad_checkpointing` and `clip`, and
        for a checkpoint written before records its run's settings stand for it (no
        `image_size` nor `clip`; the other settings are not read). A record missing a
        setting is one sentence naming `source`, the file it was read from."""
        missing = [name for name in _REQUIRED if name not in record]
        if missing:
            raise UserError(
                f"{source} records no {', '.join(missing)} for its model: it is damaged; "
                "download, export or train the model again."
            )
        return cls(**{name: record[name] for name in _FIELDS if name in record})

    def run_settings(self) -> dict:
        """The record's run settings, by name: what a loaded model's settings take from it."""
        return {name: getattr(self, name) for name in RUN_SETTINGS}

    def check_clip(self, built: ModelArgs, source: str) -> None:
        """The CLIP a model was built over (`built`) is the one this record names (identity
        and input size), so that weights trained over one CLIP are never evaluated over
        another that happens to fit them. Records written before identities were are not
        checked."""
        if self.clip is None:
            return
        recorded = (self.clip["model_id"], self.clip["pretrained_id"], self.image_size)
        loaded = (built.clip["model_id"], built.clip["pretrained_id"], built.image_size)
        if recorded != loaded:
            raise UserError(
                f"{source} was trained over CLIP {recorded[0]} with weights {recorded[1]} "
                f"({recorded[2]} px), but --clip-model/--clip-pretrained load {loaded[0]} with "
                f"weights {loaded[1]} ({loaded[2]} px); pass the CLIP files the run was "
                "trained with."
            )


_FIELDS = tuple(f.name for f in dataclasses.fields(ModelArgs))
# The fields that are run settings (the rest describe the CLIP), and those every record has.
RUN_SETTINGS = tuple(name for name in _FIELDS if name not in ("image_size", "clip"))
_REQUIRED = tuple(f.name for f in dataclasses.fields(ModelArgs) if f.default is dataclasses.MISSING)
