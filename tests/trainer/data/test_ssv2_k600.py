"""Something-Something v2 and Kinetics-600 in their official layouts (miniature copies
written here), the shipped SSv2 class list, and `eval --zero-shot subsets`."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from storyboard_common.classes import load_classes, shipped_datasets
from storyboard_common.errors import UserError
from storyboard_common.resources import data_path
from testkit.cli import TINY_CLIP_CONFIG, trainer_cli
from testkit.videos import write_video
from trainer.data.layouts import DATASETS, available_splits, folds, kinetics, load_split, ssv2
from trainer.data.layouts import test_split as evaluation_split  # not a test
from trainer.data.protocols import read_subset_file, subset_class_ids

TINTS = [(1.0, 0.2, 0.2), (0.2, 1.0, 0.2), (0.2, 0.2, 1.0)]


def _webm_codec() -> str | None:
    for name in ("libvpx-vp9", "libvpx"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - not built into this PyAV
            continue
    return None


WEBM = _webm_codec()
EXT = ".webm" if WEBM else ".mp4"  # the layout accepts .mp4 copies where no VP8/9 encoder is


# Written in a fresh interpreter: once decord (which bundles its own FFmpeg) is loaded,
# PyAV's libvpx encoder fails to open (avcodec_open2 returns EINVAL).
_ENCODE_WEBM = """
import sys, av, numpy as np
path, codec, frames, r, g, b = sys.argv[1], sys.argv[2], int(sys.argv[3]), *map(float, sys.argv[4:])
with av.open(path, mode="w") as container:
    stream = container.add_stream(codec, rate=8)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    for i in range(frames):
        level = min(8 * i + 16, 255)
        image = (np.ones((48, 64, 3)) * np.asarray((r, g, b)) * level).clip(0, 255)
        frame = av.VideoFrame.from_ndarray(image.astype(np.uint8), format="rgb24")
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
"""


def write_clip(path: Path, tint=(1.0, 1.0, 1.0), frames: int = 12) -> Path:
    """A tinted 64x48 clip: VP9/VP8 .webm as released, else mpeg4 (`write_video`)."""
    path = Path(path)
    if path.suffix != ".webm":
        return write_video(path, frames=frames, width=64, height=48, tint=tint)
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-c", _ENCODE_WEBM, str(path), WEBM, str(frames), *map(str, tint)],
        check=True,
        capture_output=True,
    )
    return path


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def scored_subtexts(base: Path, names, clip) -> tuple[Path, Path]:
    """`clip`'s weights as a checkpoint and sub-texts "<class> start/middle/end" scored with
    them for `names` (in id order) -> (checkpoint, subtexts.parquet)."""
    import torch

    base.mkdir(parents=True, exist_ok=True)
    ckpt = base / "clip.pt"
    torch.save(clip.model.state_dict(), ckpt)
    return ckpt, scored_with(ckpt, base, names)


def scored_with(ckpt: Path, base: Path, names) -> Path:
    """Sub-texts "<class> start/middle/end" for `names` (in id order), scored with the tiny
    CLIP's checkpoint `ckpt` -> subtexts.parquet."""
    from storyboard_common.classes import ClassList
    from storyboard_common.clip import load_clip
    from subtext_gen.generate import generate
    from subtext_gen.llm.files import FileBackend
    from subtext_gen.score import score

    base.mkdir(parents=True, exist_ok=True)
    sets = {n: [[f"{n} start", f"{n} middle", f"{n} end"]] for n in names}
    (base / "sets.json").write_text(json.dumps(sets))
    generate(
        ClassList("mini", tuple(names)),
        FileBackend(base / "sets.json"),
        base / "art",
        3,
        show_progress=False,
    )
    out = score(base / "art", load_clip(str(TINY_CLIP_CONFIG), str(ckpt), "cpu")).out_dir
    return out / "subtexts.parquet"


# --- Something-Something v2 ----------------------------------------------------------------

# labels.json of a 3-class miniature (ids 0..2, listed out of id order)
SSV2_LABELS = {
    "Holding something next to something": "2",
    "Approaching something with your camera": "0",
    "Closing something": "1",
}
SSV2_NAMES = (
    "Approaching something with your camera",
    "Closing something",
    "Holding something next to something",
)
HOLDING = "Holding [something] next to [something]"


def entry(vid: str, template: str, label: str = "a thing") -> dict:
    return {"id": vid, "label": label, "template": template, "placeholders": ["a thing"]}


SSV2_TRAIN = [
    entry("101", HOLDING, "holding potato next to vicks vaporub bottle"),
    entry("102", "Approaching [something] with your camera"),
    entry("103", "Closing [something]"),
    entry("104", "Closing [something]"),  # no video
    entry("105", "Approaching [something] with your camera"),
    entry("106", HOLDING),
]
SSV2_VAL = [entry("201", "Closing [something]"), entry("202", HOLDING), entry("203", HOLDING)]
SSV2_ON_DISK = {"101": 2, "102": 0, "103": 1, "105": 0, "106": 2, "201": 1, "202": 2}


@pytest.fixture()
def ssv2_root(tmp_path):
    root = tmp_path / "ssv2"
    labels = root / "labels"
    labels.mkdir(parents=True)
    (labels / "labels.json").write_text(json.dumps(SSV2_LABELS))
    (labels / "train.json").write_text(json.dumps(SSV2_TRAIN))
    (labels / "validation.json").write_text(json.dumps(SSV2_VAL))
    (labels / "test.json").write_text(json.dumps([{"id": "301"}]))
    for vid, c in SSV2_ON_DISK.items():
        write_clip(root / "20bn-something-something-v2" / f"{vid}{EXT}", TINTS[c])
    touch(root / "20bn-something-something-v2" / "notes.txt")
    return root


def test_ssv2_classes_from_labels_json_items_from_templates_missing_reported(ssv2_root):
    train = load_split("ssv2", ssv2_root, "train", fold=3)  # the fold is ignored
    assert train.class_names == SSV2_NAMES
    assert train.dataset == "ssv2" and train.split == "train" and train.fold is None
    assert not train.multi_label
    assert [(it.video_id, it.label) for it in train.items] == [
        ("101", 2),
        ("102", 0),
        ("103", 1),
        ("105", 0),
        ("106", 2),
    ]
    assert train.missing == ("104",)
    videos = ssv2_root.resolve() / "20bn-something-something-v2"
    assert train.items[0].path == videos / f"101{EXT}"
    val = load_split("ssv2", ssv2_root, "validation")
    assert val.split == "val" and val.class_names == SSV2_NAMES
    assert [(it.video_id, it.label) for it in val.items] == [("201", 1), ("202", 2)]
    assert val.missing == ("203",)
    assert ssv2.template_name(HOLDING) == "Holding something next to something"
    assert ssv2.template_name("[Something] falling like a rock") == "Something falling like a rock"


def test_ssv2_other_layouts_and_the_shipped_ids(ssv2_root, tmp_path):
    # videos/ instead of 20bn-something-something-v2/, label files at the root, 20BN names
    (ssv2_root / "20bn-something-something-v2").rename(ssv2_root / "videos")
    for path in (ssv2_root / "labels").iterdir():
        path.rename(ssv2_root / f"something-something-v2-{path.name}")
    (ssv2_root / "labels").rmdir()
    val = load_split("ssv2", ssv2_root, "val")
    assert [it.video_id for it in val.items] == ["201", "202"]
    assert val.items[0].path.parent == ssv2_root.resolve() / "videos"
    # --videos: the folder of the files, or one holding 20bn-something-something-v2/
    elsewhere = tmp_path / "elsewhere"
    shutil.move(ssv2_root / "videos", elsewhere / "20bn-something-something-v2")
    for videos in (elsewhere, elsewhere / "20bn-something-something-v2"):
        val = load_split("ssv2", ssv2_root, "val", videos=videos)
        assert [it.video_id for it in val.items] == ["201", "202"]
    # the released .webm wins over a converted copy of another extension
    folder = elsewhere / "20bn-something-something-v2"
    if EXT == ".webm":
        shutil.copy(folder / "201.webm", folder / "201.mp4")
        val = load_split("ssv2", ssv2_root, "val", videos=folder)
        assert val.items[0].path.name == "201.webm"
    # without labels.json, the shipped list gives the official ids
    (ssv2_root / "something-something-v2-labels.json").unlink()
    val = load_split("ssv2", ssv2_root, "val", videos=folder)
    assert len(val.class_names) == 174
    assert [(it.video_id, it.label) for it in val.items] == [("201", 5), ("202", 19)]


def test_ssv2_mistakes(ssv2_root, tmp_path):
    with pytest.raises(UserError, match=r"test\.json has ids only, no labels.*split is val"):
        load_split("ssv2", ssv2_root, "test")
    with pytest.raises(UserError, match=r"--split 'dev' does not exist for Something"):
        load_split("ssv2", ssv2_root, "dev")
    with pytest.raises(UserError, match=r"video folder not found: .*--videos"):
        load_split("ssv2", ssv2_root, "train", videos=tmp_path / "nope")
    bad = [*SSV2_VAL, entry("204", "Juggling [something]")]
    (ssv2_root / "labels" / "validation.json").write_text(json.dumps(bad))
    with pytest.raises(
        UserError,
        match=r"validation\.json entry 4 \(id 204\): template "
        r"'Juggling \[something\]' is not a class of .*labels\.json \(3 classes\)",
    ):
        load_split("ssv2", ssv2_root, "val")
    (ssv2_root / "labels" / "validation.json").write_text(json.dumps([{"id": "1"}]))
    with pytest.raises(UserError, match=r"entry 1 \(id 1\) has no template"):
        load_split("ssv2", ssv2_root, "val")
    (ssv2_root / "labels" / "validation.json").write_text("[{")
    with pytest.raises(UserError, match=r"validation\.json is not a readable JSON file"):
        load_split("ssv2", ssv2_root, "val")
    (ssv2_root / "labels" / "validation.json").unlink()
    with pytest.raises(UserError, match=r"annotation file not found: .*validation\.json"):
        load_split("ssv2", ssv2_root, "val")
    (ssv2_root / "labels" / "labels.json").write_text(json.dumps({"Closing something": "1"}))
    with pytest.raises(UserError, match=r"labels\.json: ids must be 0\.\.0"):
        load_split("ssv2", ssv2_root, "train")
    (ssv2_root / "labels" / "labels.json").write_text(json.dumps(SSV2_LABELS))
    shutil.rmtree(ssv2_root / "20bn-something-something-v2")
    with pytest.raises(
        UserError,
        match=r"video folder not found: .*20bn-something-something-v2 "
        r"or .*videos; --root must hold",
    ):
        load_split("ssv2", ssv2_root, "train", videos=None)


def test_the_shipped_ssv2_class_list():
    names = load_classes("ssv2").names
    assert "ssv2" in shipped_datasets()
    assert len(names) == len(set(names)) == 174
    assert names[0] == "Approaching something with your camera"
    assert names[5] == "Closing something"
    assert names[19] == "Holding something next to something"
    assert names[21] == "Laying something on the table on its side, not upright"  # a comma
    assert names[173] == "Wiping something off of something"
    assert not any("[" in n or "]" in n for n in names)
    assert list(names) == sorted(names)  # labels.json numbers the templates alphabetically
    with open(data_path("ssv2", "classes.csv"), newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["id"]) for r in rows] == list(range(174))


def test_ssv2_check_data_json(ssv2_root):
    done = trainer_cli(
        "check-data",
        "--dataset",
        "ssv2",
        "--root",
        str(ssv2_root),
        "--json",
        "--workers",
        "1",
        "--allow-missing",
        "2",
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["classes"] == 3
    assert report["splits"] == {"train": 5, "val": 2}  # test.json has no labels: no split
    assert sorted(report["missing"]) == ["104", "203"]
    assert report["unreadable"] == [] and report["short"] == []


# --- Kinetics-600 --------------------------------------------------------------------------

K_HEADER = "label,youtube_id,time_start,time_end,split\n"


def test_k600_splits_and_the_registry(tmp_path):
    root = tmp_path / "k600"
    root.mkdir()
    (root / "train.csv").write_text(
        K_HEADER + "yarn spinning,aaa,0,10,train\n"
        "tie dying,bbb,5,15,train\ntie dying,ccc,1,11,train\n"
    )
    (root / "validate.csv").write_text(
        K_HEADER + "tie dying,ddd,0,10,val\nyarn spinning,eee,3,13,val\n"
    )
    touch(root / "train" / "yarn spinning" / "aaa_000000_000010.mp4")
    touch(root / "train" / "bbb_000005_000015.mp4")
    touch(root / "validate" / "tie_dying" / "ddd_000000_000010.mp4")
    train = load_split("k600", root, "train")
    assert train.dataset == "k600" and train.class_names == ("tie dying", "yarn spinning")
    assert [(it.video_id, it.label) for it in train.items] == [
        ("aaa_000000_000010", 1),
        ("bbb_000005_000015", 0),
    ]
    assert train.missing == ("ccc_000001_000011",)
    val = load_split("k600", root, evaluation_split("k600"))
    assert val.split == "val" and [it.video_id for it in val.items] == ["ddd_000000_000010"]
    assert val.missing == ("eee_000003_000013",)
    (root / "validate.csv").write_text(K_HEADER + "zumba,fff,0,10,val\n")
    with pytest.raises(UserError, match=r"label 'zumba' is not a Kinetics-600 class"):
        load_split("k600", root, "val")
    with pytest.raises(UserError, match=r"Kinetics-600 video folder not found"):
        load_split("k600", root, "train", videos=tmp_path / "nope")
    assert kinetics.load(root, "train").dataset == "k400"  # k400 stays the default

    assert {"k400", "k600", "ssv2"} <= set(DATASETS)
    assert available_splits("k600") == [("train", None), ("val", None), ("test", None)]
    assert available_splits("ssv2") == [("train", None), ("val", None)]
    splits = [evaluation_split(d) for d in ("k400", "k600", "ssv2", "hmdb51")]
    assert splits == ["val", "val", "val", "test"]
    assert folds("k600", None) == folds("ssv2", "all") == [None]


# --- subset files --------------------------------------------------------------------------


def test_subset_files_one_name_a_line_or_csv(tmp_path):
    laying = "Laying something on the table on its side, not upright"
    classes = ("tie dying", "yarn spinning", laying)
    txt = tmp_path / "a.txt"
    txt.write_text("# split 1\nyarn spinning\n\n  Tie_Dying \n")
    assert read_subset_file(txt) == ("yarn spinning", "Tie_Dying")
    assert subset_class_ids(txt, read_subset_file(txt), classes, "k600") == [1, 0]
    csv_file = tmp_path / "b.csv"
    csv_file.write_text('id,name\n7,"Laying [something] on the table on its side, not upright"\n')
    assert subset_class_ids(csv_file, read_subset_file(csv_file), classes, "ssv2") == [2]
    headed = tmp_path / "c.txt"
    headed.write_text("id,name\n0,tie dying\n")
    assert read_subset_file(headed) == ("tie dying",)

    txt.write_text("yarn spinning\nzumba\n")
    with pytest.raises(
        UserError,
        match=r"--subsets .*a\.txt: not a class of k600 \(3 classes\): "
        r"'zumba' \(no near name\)\.",
    ):
        subset_class_ids(txt, read_subset_file(txt), classes, "k600")
    txt.write_text("yarn spinning\nyarn_spinning\n")
    with pytest.raises(UserError, match=r"a\.txt lists these classes twice: 'yarn_spinning'"):
        subset_class_ids(txt, read_subset_file(txt), classes, "k600")
    txt.write_text("\n# nothing\n")
    with pytest.raises(UserError, match=r"a\.txt lists no class names"):
        read_subset_file(txt)
    with pytest.raises(UserError, match=r"--subsets file not found: .*gone\.txt"):
        read_subset_file(tmp_path / "gone.txt")
    csv_file.write_text("id,label\n0,tie dying\n")
    with pytest.raises(UserError, match=r"needs a `name` column"):
        read_subset_file(csv_file)


# --- run, cache-features and eval on miniature SSv2 and K600 -------------------------------

K600_CLASSES = ("blue rise", "green rise", "red rise")  # sorted: train.csv's class order


@pytest.fixture(scope="module")
def k600_world(tmp_path_factory, tiny_clip):
    """A tinted 3-class K600 miniature (2 train, 2 val clips a class; one val row without a
    clip), the tiny CLIP's checkpoint and sub-texts scored with it."""
    base = tmp_path_factory.mktemp("k600world")
    root = base / "k600"
    rows = {"train": [], "val": []}
    for c, name in enumerate(K600_CLASSES):
        tint = TINTS[::-1][c]
        for i in range(4):
            split = "train" if i < 2 else "val"
            yid = f"{name[0]}{i}x"
            rows[split].append(f"{name},{yid},{i},{i + 10},{split}\n")
            folder = root / ("train" if split == "train" else "validate") / name
            write_clip(folder / f"{kinetics.clip_id(yid, i, i + 10)}.mp4", tint)
    (root / "train.csv").write_text(K_HEADER + "".join(rows["train"]))
    (root / "validate.csv").write_text(K_HEADER + "".join(rows["val"]) + "red rise,gone,0,10,val\n")
    ckpt, subtexts = scored_subtexts(base / "text", K600_CLASSES, tiny_clip)
    return {"root": root, "ckpt": ckpt, "subtexts": subtexts, "base": base}


def common(world, dataset: str) -> list[str]:
    return [
        "--dataset",
        dataset,
        "--root",
        str(world["root"]),
        "--clip-model",
        str(TINY_CLIP_CONFIG),
        "--clip-pretrained",
        str(world["ckpt"]),
        "--frames",
        "4",
        "--device",
        "cpu",
        "--workers",
        "0",
        "--seed",
        "1",
    ]


def train_args(world, dataset: str, out: Path) -> list[str]:
    return [
        "run",
        *common(world, dataset),
        "--subtexts",
        str(world["subtexts"]),
        "--epochs",
        "1",
        "--batch-size",
        "3",
        "--lr",
        "2e-3",
        "--warmup-epochs",
        "1",
        "--out",
        str(out),
        "--json",
    ]


@pytest.fixture(scope="module")
def k600_run(k600_world):
    from typer.testing import CliRunner

    from trainer.__main__ import app

    out = k600_world["base"] / "run"
    done = CliRunner().invoke(app, train_args(k600_world, "k600", out))
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["n"] == 6  # the val clips on disk
    return out


@pytest.mark.slow
def test_eval_zero_shot_subsets_scores_each_subset_on_its_own_videos_and_classes(
    k600_world, k600_run, tmp_path, monkeypatch
):
    from trainer import evaluation

    a = tmp_path / "a.txt"
    a.write_text("red rise\nblue rise\n")
    b = tmp_path / "b.csv"
    b.write_text("id,name\n1,green rise\n2,red rise\n")
    cmd = [
        "eval",
        "--checkpoint",
        str(k600_run),
        "--dataset",
        "k600",
        "--root",
        str(k600_world["root"]),
        "--subtexts",
        str(k600_world["subtexts"]),
        "--device",
        "cpu",
        "--workers",
        "0",
    ]
    done = trainer_cli(
        *cmd, "--zero-shot", "subsets", "--subsets", str(a), "--subsets", str(b), "--json"
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["runs"] == 2 and result["n"] == 8
    rows = result["subsets"]
    assert [(r["file"], r["classes"], r["n"]) for r in rows] == [(str(a), 2, 4), (str(b), 2, 4)]
    assert result["top1"] == pytest.approx(np.mean([r["top1"] for r in rows]))
    assert result["top1_std"] == pytest.approx(np.std([r["top1"] for r in rows]))
    assert all(0 <= r["top1"] <= r["top5"] == 1.0 for r in rows)  # two classes: top-5 is all

    # What each subset's evaluation saw: its classes' val videos, against its classes' texts,
    # labelled in the file's order.
    seen = []
    predict = evaluation.predict

    def spy(model, text, loader, *args, **kwargs):
        out = predict(model, text, loader, *args, **kwargs)
        seen.append((text.num_classes, dict(zip(out[2], out[1].tolist()))))
        return out

    monkeypatch.setattr(evaluation, "predict", spy)
    summary = evaluation.evaluate_checkpoint(
        k600_run,
        "k600",
        k600_world["root"],
        k600_world["subtexts"],
        "subsets",
        device="cpu",
        workers=0,
        show_progress=False,
        subsets=[a, b],
    )
    assert [r["top1"] for r in summary["subsets"]] == [r["top1"] for r in rows]
    assert seen == [
        (
            2,
            {
                "r2x_000002_000012": 0,
                "r3x_000003_000013": 0,
                "b2x_000002_000012": 1,
                "b3x_000003_000013": 1,
            },
        ),
        (
            2,
            {
                "g2x_000002_000012": 0,
                "g3x_000003_000013": 0,
                "r2x_000002_000012": 1,
                "r3x_000003_000013": 1,
            },
        ),
    ]

    # One clear error: the file and the name; flags that do not go together.
    c = tmp_path / "c.txt"
    c.write_text("red rise\npurple fall\n")
    bad = trainer_cli(*cmd, "--zero-shot", "subsets", "--subsets", str(a), "--subsets", str(c))
    assert bad.returncode == 2
    assert (
        bad.stderr.startswith(
            f"error: --subsets {c}: not a class of k600 (3 classes): 'purple fall' ("
        )
        and bad.stderr.count("\n") == 1
    )
    with pytest.raises(UserError, match=r"--zero-shot subsets needs --subsets FILE"):
        evaluation.evaluate_checkpoint(k600_run, "k600", k600_world["root"], zero_shot="subsets")
    with pytest.raises(UserError, match=r"--subsets FILE goes with --zero-shot subsets"):
        evaluation.evaluate_checkpoint(
            k600_run, "k600", k600_world["root"], zero_shot="half", subsets=[a]
        )


def test_eval_zero_shot_subsets_with_one_artifact_per_subset_file(k600_world, k600_run, tmp_path):
    """Per-split description files as published: each split's artifact holds its classes
    only (in its own order); the results equal those from one artifact of every class."""
    from trainer.evaluation import evaluate_checkpoint

    a = tmp_path / "split1.txt"
    a.write_text("red rise\nBlue_Rise\n")
    b = tmp_path / "split2.csv"
    b.write_text("id,name\n0,green rise\n1,red rise\n")
    art_a = scored_with(k600_world["ckpt"], tmp_path / "a", ["blue rise", "red rise"])
    art_b = scored_with(k600_world["ckpt"], tmp_path / "b", ["green rise", "red rise"])

    def evaluate(subtexts):
        return evaluate_checkpoint(
            k600_run,
            "k600",
            k600_world["root"],
            subtexts,
            "subsets",
            device="cpu",
            workers=0,
            show_progress=False,
            subsets=[a, b],
        )

    per_file, superset = evaluate([art_a, art_b]), evaluate(k600_world["subtexts"])
    assert [r["subtexts"] for r in per_file["subsets"]] == [str(art_a), str(art_b)]
    assert [r["subtexts"] for r in superset["subsets"]] == [str(k600_world["subtexts"])] * 2
    for key in ("top1", "top5", "top1_std", "n", "runs"):
        assert per_file[key] == pytest.approx(superset[key]), key
    for mine, whole in zip(per_file["subsets"], superset["subsets"]):
        assert (mine["classes"], mine["n"]) == (whole["classes"], whole["n"]) == (2, 4)
        assert mine["top1"] == pytest.approx(whole["top1"])

    with pytest.raises(UserError) as err:  # split 2's classes are not all in split 1's file
        evaluate([art_b, art_a])
    assert str(err.value).startswith(
        f"--subtexts {art_b} has no sub-texts for these classes of --subsets {a}: 'Blue_Rise' ("
    )
    with pytest.raises(UserError, match=r"^3 --subtexts for 2 --subsets files: give one"):
        evaluate([art_a, art_b, art_a])


def test_cache_features_and_check_data_on_k600(k600_world, tmp_path):
    from typer.testing import CliRunner

    from trainer.__main__ import app

    out = tmp_path / "features"
    done = CliRunner().invoke(
        app, ["cache-features", *common(k600_world, "k600"), "--views", "1", "--out", str(out)]
    )
    assert done.exit_code == 0, done.output
    assert "train: 6 views encoded, 0 unreadable" in done.output
    assert json.loads((out / "meta.json").read_text())["dataset"] == "k600"
    report = trainer_cli(
        "check-data",
        "--dataset",
        "k600",
        "--root",
        str(k600_world["root"]),
        "--json",
        "--workers",
        "1",
        "--allow-missing",
        "1",
    )
    assert report.returncode == 0, report.stderr
    data = json.loads(report.stdout)
    assert data["classes"] == 3 and data["splits"] == {"train": 6, "val": 6}
    assert data["missing"] == ["gone_000000_000010"]


def test_run_and_cache_features_on_ssv2(ssv2_root, tiny_clip, tmp_path):
    from typer.testing import CliRunner

    from trainer.__main__ import app

    ckpt, subtexts = scored_subtexts(tmp_path / "text", SSV2_NAMES, tiny_clip)
    world = {"root": ssv2_root, "ckpt": ckpt, "subtexts": subtexts}
    done = CliRunner().invoke(app, train_args(world, "ssv2", tmp_path / "run"))
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["n"] == 2  # validation.json's videos on disk
    out = tmp_path / "features"
    done = CliRunner().invoke(
        app, ["cache-features", *common(world, "ssv2"), "--views", "1", "--out", str(out)]
    )
    assert done.exit_code == 0, done.output
    assert "train: 5 views encoded, 0 unreadable" in done.output
