"""A scored miniature dataset in the generic list layout, for tests and benchmarks: tinted
videos (one tint per class), a CLIP checkpoint and the sub-text artifact scored with it."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from testkit.videos import write_video


def write_list_dataset(
    base: Path,
    clip,
    clip_config: Path,
    classes: Sequence[str],
    tints: Sequence[tuple[float, float, float]],
    train_per_class: int,
    test_per_class: int = 1,
    write: Callable[[Path, int, int], object] | None = None,
    **video,
) -> dict:
    """`train_per_class` training and `test_per_class` test videos per class (by default
    `write_video(**video)` tinted by class; `write(path, class, i)` writes video i of a
    class otherwise), `clip`'s weights saved as `clip.pt` and sub-texts "<class>
    start/middle/end" scored with them -> {root, ckpt, subtexts, base}."""
    import torch

    from storyboard_common.classes import load_classes
    from storyboard_common.clip import load_clip
    from subtext_gen.generate import generate
    from subtext_gen.llm.files import FileBackend
    from subtext_gen.score import score

    root = base / "data"
    (root / "clips").mkdir(parents=True)
    (root / "classes.csv").write_text(
        "id,name\n" + "".join(f"{i},{n}\n" for i, n in enumerate(classes))
    )
    lines = {"train": [], "test": []}
    for c, tint in enumerate(tints):
        for i in range(train_per_class + test_per_class):
            name = f"clips/c{c}_{i}.mp4"
            if write is None:
                write_video(root / name, tint=tint, **video)
            else:
                write(root / name, c, i)
            lines["train" if i < train_per_class else "test"].append(f"{name} {c}")
    for split, rows in lines.items():
        (root / f"{split}.txt").write_text("\n".join(rows) + "\n")
    ckpt = base / "clip.pt"
    torch.save(clip.model.state_dict(), ckpt)
    sets = {n: [[f"{n} start", f"{n} middle", f"{n} end"]] for n in classes}
    (base / "sets.json").write_text(json.dumps(sets))
    names = load_classes(classes_file=root / "classes.csv")
    generate(names, FileBackend(base / "sets.json"), base / "art", 3, show_progress=False)
    out = score(base / "art", load_clip(str(clip_config), str(ckpt), "cpu")).out_dir
    return {"root": root, "ckpt": ckpt, "subtexts": out / "subtexts.parquet", "base": base}
