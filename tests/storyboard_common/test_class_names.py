"""Class names from users' files: index-keyed description files land on the right class
through their own label list (`--index-classes`); one spelling rule (`class_key`) for
imports, the artifact check, `--subsets` and class lists."""

import json

import pandas as pd
import pytest

from storyboard_common.classes import class_key, load_classes, match_names, nearest_names
from subtext_gen.__main__ import app
from testkit.cli import run_app

HMDB = load_classes("hmdb51").names


def ost_hmdb_labels() -> list[str]:
    """HMDB-51 as OST's label csv orders it: ours with 20/21 (kick ball / kick) and 44/45
    (sword exercise / sword) swapped, two names spelled with spaces."""
    labels = list(HMDB)
    labels[20], labels[21] = labels[21], labels[20]
    labels[44], labels[45] = labels[45], labels[44]
    assert (labels[20], labels[21], labels[44], labels[45]) == (
        "kick_ball",
        "kick",
        "sword_exercise",
        "sword",
    )
    labels[0], labels[20] = "brush hair", "kick ball"
    return labels


def write_label_csv(path, names):
    path.write_text("id,name\n" + "".join(f"{i},{n}\n" for i, n in enumerate(names)))
    return path


def write_index_json(path, names):
    """{"i": [4 texts naming the class the file's author meant by i]}, as published."""
    data = {
        str(i): [f"Step {k}: {name} part {k}" for k in range(1, 5)] for i, name in enumerate(names)
    }
    path.write_text(json.dumps(data))
    return path


def generate(tmp_path, *args):
    return run_app(app, "generate", "--llm", "file", "--no-progress", *args)


def sub_texts_by_class(out) -> dict[str, list[str]]:
    frame = pd.read_parquet(out / "candidates.parquet")
    return {r.class_name: list(r.sub_texts) for r in frame.itertuples()}


def test_index_keyed_file_lands_through_its_label_list(tmp_path):
    labels = ost_hmdb_labels()
    descriptors = write_index_json(tmp_path / "4_descriptors.json", labels)
    label_csv = write_label_csv(tmp_path / "hmdb_51_labels.csv", labels)
    out = tmp_path / "art"
    code, stdout, error = generate(
        tmp_path,
        "--dataset",
        "hmdb51",
        "--input",
        descriptors,
        "--index-classes",
        label_csv,
        "--out",
        out,
    )
    assert (code, error) == (0, None)
    texts = sub_texts_by_class(out)
    assert len(texts) == 51
    for name in HMDB:  # every class holds the texts written for it, swapped pairs included
        assert class_key(texts[name][0]).startswith(class_key(name) + " part"), name
    assert texts["kick_ball"][0] == "kick ball part 1" and texts["kick"][0] == "kick part 1"
    assert texts["sword"][0] == "sword part 1"
    flat = " ".join(stdout.split())
    assert "51 of 51 classes have sets (49 exact, 2 folded)" in flat
    assert "'0' -> brush_hair" in flat and "'20' -> kick_ball" in flat


def test_index_keyed_file_without_its_list_is_refused_even_with_the_same_count(tmp_path):
    """51 keys for 51 classes used to be taken as our order (with a note), which put kick's
    texts on kick_ball for OST's file: now it needs --index-classes, nothing written."""
    descriptors = write_index_json(tmp_path / "4_descriptors.json", ost_hmdb_labels())
    out = tmp_path / "art"
    code, _, error = generate(tmp_path, "--dataset", "hmdb51", "--input", descriptors, "--out", out)
    assert code == 1 and "\n" not in str(error)
    assert str(error) == (
        f"{descriptors} is keyed by class index: pass --index-classes FILE, the label list it "
        "was written for (csv id,name, one name a line, or a shipped dataset's name), since "
        "published orders differ (51 keys)."
    )
    assert not out.exists()


def test_index_classes_takes_a_shipped_lists_name(tmp_path):
    """`--index-classes hmdb51`: a file written in the official order."""
    descriptors = write_index_json(tmp_path / "official.json", HMDB)
    out = tmp_path / "art"
    code, stdout, error = generate(
        tmp_path,
        "--dataset",
        "hmdb51",
        "--input",
        descriptors,
        "--index-classes",
        "hmdb51",
        "--out",
        out,
    )
    assert (code, error) == (0, None)
    texts = sub_texts_by_class(out)
    assert texts["kick_ball"][0] == "kick_ball part 1" and texts["sword"][0] == "sword part 1"
    assert "51 of 51 classes have sets (51 exact)" in " ".join(stdout.split())


@pytest.fixture()
def k600(tmp_path):
    """A 600-class list and a zero-shot split's 160 classes, in the split file's own order."""
    names = [f"action {i:03d}" for i in range(600)]
    classes = write_label_csv(tmp_path / "k600_labels.csv", names)
    split = [names[i] for i in range(599, 119, -3)]
    assert len(split) == 160
    return classes, split


def test_160_keys_against_600_classes(tmp_path, k600):
    classes, split = k600
    descriptors = write_index_json(tmp_path / "4_descriptors.json", split)
    out = tmp_path / "art"
    code, _, error = generate(tmp_path, "--classes", classes, "--input", descriptors, "--out", out)
    assert code == 1 and "\n" not in str(error)
    assert str(error) == (
        f"{descriptors} is keyed by class index: pass --index-classes FILE, the label list it "
        "was written for (csv id,name, one name a line, or a shipped dataset's name), since "
        "published orders differ (160 keys)."
    )
    assert not out.exists()  # nothing written
    label_csv = write_label_csv(tmp_path / "ZS_split1_K600.csv", split)
    code, stdout, error = generate(
        tmp_path,
        "--classes",
        classes,
        "--input",
        descriptors,
        "--index-classes",
        label_csv,
        "--out",
        out,
    )
    assert (code, error) == (0, None)
    texts = sub_texts_by_class(out)
    assert set(texts) == set(split)
    assert all(texts[name][0] == f"{name} part 1" for name in split)
    assert "160 of 600 classes have sets (160 exact, 440 missing)." in " ".join(stdout.split())


def test_index_list_mistakes_are_one_sentence_and_write_nothing(tmp_path):
    labels = list(ost_hmdb_labels())
    descriptors = write_index_json(tmp_path / "d.json", labels)
    out = tmp_path / "art"
    wrong = labels[:]
    wrong[3], wrong[7] = "clap hands", "chwe"
    cases = [
        (
            ("--index-classes", write_label_csv(tmp_path / "wrong.csv", wrong)),
            "is keyed by the classes of --index-classes wrong, of which these are not classes "
            "of hmdb51: 'clap hands' (nearest: shake_hands, clap, handstand), 'chwe' (nearest: "
            "chew, wave).",
        ),
        (
            ("--index-classes", write_label_csv(tmp_path / "short.csv", labels[:50])),
            "is keyed by class index with 51 keys, but its --index-classes list short has 50 "
            "classes: pass the label list the file was written for.",
        ),
        (("--index-classes", tmp_path / "none.csv"), "--index-classes file not found"),
    ]
    for extra, message in cases:
        code, _, error = generate(
            tmp_path, "--dataset", "hmdb51", "--input", descriptors, "--out", out, *extra
        )
        assert code == 1 and message in str(error) and "\n" not in str(error), (extra, error)
        assert not out.exists()
    by_name = tmp_path / "cupl.json"
    by_name.write_text(json.dumps({"brush hair": ["a", "b"]}))
    code, _, error = generate(
        tmp_path,
        "--dataset",
        "hmdb51",
        "--input",
        by_name,
        "--index-classes",
        tmp_path / "short.csv",
        "--out",
        out,
    )
    assert "no --input file is keyed by class index; drop it" in str(error)
    code, _, error = run_app(
        app, "generate", "--llm", "llava", "--dataset", "hmdb51", "--index-classes", by_name
    )
    assert "--index-classes goes with --llm file" in str(error)
    assert not out.exists()


def test_one_rule_for_class_names():
    assert class_key("brush_hair") == class_key("Brush hair") == class_key("brush-hair")
    assert class_key("ApplyEyeMakeup") == class_key("apply_eye_makeup") == "apply eye makeup"
    assert class_key("Putting [something] on a surface") == "putting something on a surface"
    found = match_names(["brush hair", "kick", "Kick_Ball", "juggle"], HMDB)
    assert found.how == ("folded", "exact", "folded", "missing")
    assert found.ids == (0, HMDB.index("kick"), HMDB.index("kick_ball"), None)
    assert nearest_names("ride bikes", HMDB) == ["ride_bike", "ride_horse"]


def test_artifact_check_folds_spelling_and_names_the_nearest(tmp_path):
    from storyboard_common.errors import UserError
    from trainer.data.items import SplitList
    from trainer.run_data import check_classes

    split = SplitList("hmdb51", "test", 1, HMDB, ())
    spelled = ["brush hair", *(n.replace("_", " ") for n in HMDB[1:])]
    check_classes(split, spelled, tmp_path / "subtexts.parquet")  # one class, two spellings
    wrong = [*HMDB[:-1], "wave hands"]
    with pytest.raises(UserError) as err:
        check_classes(split, wrong, tmp_path / "subtexts.parquet")
    assert "(not in the artifact: 'wave' (nearest: wave hands" in str(err.value)
    assert "only in the artifact: 'wave hands')" in str(err.value)
    with pytest.raises(UserError, match=r"\(same classes in another order\)"):
        check_classes(split, [*HMDB[1:], HMDB[0]], tmp_path / "subtexts.parquet")


def test_class_lists_refuse_one_class_spelled_twice(tmp_path):
    from storyboard_common.errors import UserError

    path = tmp_path / "labels.txt"
    path.write_text("brush_hair\nBrush hair\nwave\n")
    with pytest.raises(
        UserError, match=r"labels.txt lists these classes twice: brush_hair / Brush hair\."
    ):
        load_classes(classes_file=path)
