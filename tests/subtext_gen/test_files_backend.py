"""The file backend: several sources, JSON keyed by class index, cleaned texts, unique keys."""

import json

import pandas as pd
import pytest

from storyboard_common.classes import ClassList
from storyboard_common.errors import UserError
from subtext_gen.artifacts import candidate_id
from subtext_gen.generate import generate
from subtext_gen.llm.files import FileBackend, file_backends, read_description_sets, source_labels

CLASSES = ClassList("t", ("brush_hair", "cartwheel", "climb_stairs"))


def write_json(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_index_keyed_json_maps_through_its_label_list(tmp_path):
    """The published shape: {"0": [4 texts], ...}, texts prefixed `Step k:`; key i is class i
    of the label list it was written for (here the same order as the classes)."""
    path = write_json(
        tmp_path / "temporal_descriptors" / "4_descriptors.json",
        {
            "2": [f"Step {k}: climb step {k}" for k in range(1, 5)],
            "0": [f"Step {k}: brush stroke {k}" for k in range(1, 5)],
            "1": ["1. raise arms", "2) hands down", "- legs over", "\u2022 land"],
        },
    )
    backend = FileBackend(path, index_classes=CLASSES)
    jobs = backend.plan(CLASSES, 4)
    assert [(j.class_id, j.class_name, j.samples) for j in jobs] == [
        (0, "brush_hair", (0,)),
        (1, "cartwheel", (0,)),
        (2, "climb_stairs", (0,)),
    ]
    summary = generate(CLASSES, backend, tmp_path / "art", 4, show_progress=False)
    assert (summary.ok, summary.failed) == (3, 0)
    df = pd.read_parquet(tmp_path / "art" / "candidates.parquet").set_index("class_name")
    assert list(df.loc["brush_hair"].sub_texts) == [f"brush stroke {k}" for k in range(1, 5)]
    assert list(df.loc["climb_stairs"].sub_texts) == [f"climb step {k}" for k in range(1, 5)]
    assert list(df.loc["cartwheel"].sub_texts) == ["raise arms", "hands down", "legs over", "land"]
    assert set(df.llm) == {"file:4_descriptors"}


def test_name_keyed_files_are_not_read_by_index(tmp_path):
    path = write_json(tmp_path / "cupl.json", {"cartwheel": ["a", "b"], "Climb Stairs": ["c"]})
    jobs = FileBackend(path).plan(CLASSES, 2)
    assert [j.class_id for j in jobs] == [1, 2]
    # integer class names are names: a file keyed by them is keyed by name
    numbered = ClassList("n", ("10", "20"))
    path = write_json(tmp_path / "numbered.json", {"20": ["a"], "10": ["b"]})
    jobs = FileBackend(path).plan(numbered, 1)
    assert [(j.class_id, j.class_name) for j in jobs] == [(0, "10"), (1, "20")]


@pytest.mark.parametrize(
    "data,message",
    [
        (
            {"0": ["a"], "3": ["b"], "12": ["c"]},
            r"is keyed by class index, but 3, 12 are not class ids of t \(0\.\.2\)\.$",
        ),
        (
            {"0": ["a"], "7": ["b"]},
            r"is keyed by class index with 2 keys, but its --index-classes list t has 3 "
            r"classes: pass the label list the file was written for\.$",
        ),
        (
            {"brush hair": ["a"], "1": ["b"]},
            r"mixes class names \(brush hair\) and class indices \(1\) as keys",
        ),
        (
            {"brush hiar": ["a"], "juggle": ["b"]},
            r"names classes that are not in t: 'brush hiar' \(nearest: brush_hair\), "
            r"'juggle' \(no near name\)\.$",
        ),
    ],
)
def test_index_and_name_errors_name_the_file(tmp_path, data, message):
    path = write_json(tmp_path / "sets.json", data)
    with pytest.raises(UserError, match=message) as err:
        FileBackend(path, index_classes=CLASSES).plan(CLASSES, 1)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


# Every published HMDB-51 order seen (OST, X-CLIP, ViFi-CLIP, ActionCLIP) puts kick_ball
# before kick and sword_exercise before sword; the official order is the other way round.
OFFICIAL = ClassList("hmdb_official", ("kick", "kick_ball", "sword", "sword_exercise"))
PUBLISHED = ClassList("hmdb_published", ("kick_ball", "kick", "sword_exercise", "sword"))


def test_an_index_keyed_file_without_its_label_list_is_refused(tmp_path, capsys):
    """As many keys as classes used to be read as "key i is our class i" with a note: for
    the published HMDB-51 orders that pairs kick's sets with kick_ball. Now refused."""
    path = write_json(tmp_path / "hmdb.json", {str(i): [n] for i, n in enumerate(PUBLISHED.names)})
    for classes in (OFFICIAL, CLASSES, PUBLISHED):
        with pytest.raises(UserError) as err:
            FileBackend(path).plan(classes, 1)
        message = str(err.value)
        assert message.startswith(f"{path} is keyed by class index: pass --index-classes FILE")
        assert "\n" not in message
    # with the list it was written for, each key lands on the class of that name
    jobs = FileBackend(path, index_classes=PUBLISHED).plan(OFFICIAL, 1)
    summary = generate(
        OFFICIAL, FileBackend(path, index_classes=PUBLISHED), tmp_path / "a", 1, show_progress=False
    )
    assert summary.ok == 4 and [j.class_id for j in jobs] == [0, 1, 2, 3]
    df = pd.read_parquet(tmp_path / "a" / "candidates.parquet")
    assert {r.class_name: list(r.sub_texts) for r in df.itertuples()} == {
        n: [n] for n in OFFICIAL.names
    }
    assert "note:" not in capsys.readouterr().err


def test_many_bad_indices_are_shortened(tmp_path):
    path = write_json(tmp_path / "ucf.json", {str(i + 90): ["a"] for i in range(101)})
    labels = ClassList("ucf_labels", tuple(f"class {i}" for i in range(101)))
    with pytest.raises(UserError) as err:
        FileBackend(path, index_classes=labels).plan(CLASSES, 1)
    assert "but 101, 102, 103, 104, 105, 106, 107, 108, 109, 110 ... (90 in all) are not " in str(
        err.value
    )


def test_imported_texts_are_cleaned_by_the_reply_parser(tmp_path):
    path = write_json(
        tmp_path / "labels.json",
        {
            "brush hair": [
                "Step 1: Pick up the brush.",
                "2. raise it",
                "3) pull it through",
                "* put it down",
                "\u2022 smile",
                '"say hi"',
                'say "hi"',
                '"say "hi""',
                "Step 9:",  # nothing left: dropped
            ]
        },
    )
    assert read_description_sets(path) == {
        "brush hair": [
            [
                "Pick up the brush",
                "raise it",
                "pull it through",
                "put it down",
                "smile",
                "say hi",
                'say "hi"',
                'say "hi"',
            ]
        ]
    }
    csv = tmp_path / "wide.csv"
    csv.write_text('class,a,b\nbrush_hair,"- ""wave""",Step 2: say "hi"\n', encoding="utf-8")
    assert read_description_sets(csv) == {"brush_hair": [["wave", 'say "hi"']]}


def test_keys_naming_one_class_are_merged_with_distinct_samples(tmp_path):
    path = write_json(
        tmp_path / "dupes.json", {"brush_hair": [["a", "b"]], "Brush Hair": [["c", "d"], ["e"]]}
    )
    backend = FileBackend(path)
    (job,) = backend.plan(CLASSES, 2)
    assert job.samples == (0, 1, 2)
    replies = next(backend.complete([job])).replies
    assert [json.loads(r) for r in replies] == [["a", "b"], ["c", "d"], ["e"]]


def test_source_labels_are_unique_stable_and_order_free(tmp_path):
    a = write_json(tmp_path / "a" / "sets.json", {})
    b = write_json(tmp_path / "b" / "sets.json", {})
    c = write_json(tmp_path / "cupl.json", {})
    d = tmp_path / "a" / "sets.csv"
    d.write_text("class,a\n")
    assert source_labels([c]) == ["file:cupl"]
    assert source_labels([a, c]) == ["file:sets", "file:cupl"]
    assert source_labels([a, b, c]) == ["file:a/sets.json", "file:b/sets.json", "file:cupl"]
    assert source_labels([c, b, a]) == ["file:cupl", "file:b/sets.json", "file:a/sets.json"]
    assert source_labels([a, d]) == ["file:sets.json", "file:sets.csv"]
    assert source_labels([a, b, d]) == ["file:a/sets.json", "file:b/sets.json", "file:sets.csv"]
    with pytest.raises(UserError, match="--input names the same file twice"):
        source_labels([a, tmp_path / "b" / ".." / "a" / "sets.json"])


def test_two_sources_give_distinct_keys_and_resume(tmp_path):
    """Two files with the same stem in different folders: both kept, keys unique, a rerun
    with the same inputs in any order imports nothing again."""
    a = write_json(
        tmp_path / "a" / "sets.json", {"brush hair": [["a1"], ["a2"]], "cartwheel": ["a3"]}
    )
    b = write_json(tmp_path / "b" / "sets.json", {"0": ["b1"], "1": ["b2"], "2": ["b3"]})
    out = tmp_path / "art"
    for backend in file_backends([a, b], index_classes=CLASSES):
        generate(CLASSES, backend, out, 1, show_progress=False)
    df = pd.read_parquet(out / "candidates.parquet")
    assert len(df) == 6 and df.candidate_id.is_unique
    assert sorted(set(df.llm)) == ["file:a/sets.json", "file:b/sets.json"]
    assert df[df.class_name == "brush_hair"].sub_texts.map(list).tolist() == [
        ["a1"],
        ["a2"],
        ["b1"],
    ]
    assert candidate_id("brush_hair", "file:b/sets.json", "file", 0) in set(df.candidate_id)
    again = [
        generate(CLASSES, backend, out, 1, show_progress=False)
        for backend in file_backends([b, a], index_classes=CLASSES)
    ]
    assert [(s.ok, s.skipped) for s in again] == [(0, 3), (0, 3)]
    assert len(pd.read_parquet(out / "candidates.parquet")) == 6
