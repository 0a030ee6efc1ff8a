"""Class lists as other projects publish them, read the same by both stages: JSON label
maps (SSv2's `labels.json`, index maps, lists) as what they are, csv names with unquoted
commas refused naming the line, UTF-16 read, other encodings and unusable templates one
sentence naming the file or flag."""

import json

import pytest

from storyboard_common.classes import load_classes
from storyboard_common.errors import UserError
from subtext_gen.__main__ import app
from testkit.cli import run_app
from trainer.data.layouts._common import read_lines
from trainer.data.layouts.ssv2 import _read_labels
from trainer.data.protocols import read_subset_file

WALK_RUN = ("walk", "run [fast]", "brush_hair")


def file_generate(classes, sets, out):
    """`generate --llm file` in this process, 2 sub-texts a set."""
    return run_app(
        app,
        "generate",
        "--llm",
        "file",
        "--classes",
        classes,
        "--input",
        sets,
        "--out",
        out,
        "--n-subtexts",
        "2",
        "--no-progress",
    )


def write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


@pytest.mark.parametrize(
    "name,content",
    [
        # SSv2's labels.json: {template: "id"}, ids as strings, in no particular order
        ("labels.json", {"brush_hair": "2", "walk": "0", "run [fast]": "1"}),
        ("ids.json", {"run [fast]": 1, "brush_hair": 2, "walk": 0}),  # ids as numbers
        ("index.json", {"1": "run [fast]", "0": "walk", "2": "brush_hair"}),  # {"i": name}
        ("list.json", list(WALK_RUN)),
        ("list.txt", list(WALK_RUN)),  # JSON saved under another suffix
        ("map.csv", {"0": "walk", "1": "run [fast]", "2": "brush_hair"}),
    ],
)
def test_json_label_maps_are_read_as_what_they_are(tmp_path, name, content):
    path = write(tmp_path, name, json.dumps(content, indent=1))
    assert load_classes(classes_file=path).names == WALK_RUN


@pytest.mark.parametrize(
    "content",
    [
        {"walk": ["a", "b"]},  # description sets, not a label list
        {"0": "walk", "x": "run"},  # names mixed with ids
        {"walk": "0", "run": "0"},  # one id twice
        {"walk": "0", "run": "2"},  # a gap
        [1, 2],
        [],
        {},
        "walk",
    ],
)
def test_json_that_is_no_label_list_is_one_sentence(tmp_path, content):
    path = write(tmp_path, "labels.json", json.dumps(content))
    with pytest.raises(UserError) as err:
        load_classes(classes_file=path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert "{" not in load_classes(classes_file=write(tmp_path, "ok.json", '["a"]')).names[0]


def test_invalid_json_names_the_flag_and_file(tmp_path):
    path = write(tmp_path, "labels.json", '{"walk": "0",\n')
    with pytest.raises(UserError, match=rf"^--index-classes file {path} is not valid JSON"):
        load_classes(classes_file=path, flag="--index-classes")


def test_unquoted_commas_in_csv_names_are_refused_naming_the_line(tmp_path):
    text = 'id,name\n0,walk\n1,"run, fast"\n2,put something on, then off\n'
    path = write(tmp_path, "classes.csv", text)
    with pytest.raises(UserError) as err:
        load_classes(classes_file=path)
    assert str(err.value) == (
        f"{path} line 4 has 3 fields, not the header's 2 ('2,put something on, then off'); "
        'quote a name that holds a comma ("a, b").'
    )
    quoted = write(tmp_path, "quoted.csv", 'id,name\n0,walk\n1,"run, fast"\n')
    assert load_classes(classes_file=quoted).names == ("walk", "run, fast")
    subsets = write(tmp_path, "subset.csv", text)
    with pytest.raises(UserError, match=rf"^--subsets {subsets} line 4 has more fields"):
        read_subset_file(subsets)


def test_both_stages_read_the_same_formats(tmp_path):
    """Stage one's --classes, stage two's SSv2 labels.json and `eval --subsets`: one reader."""
    labels = write(
        tmp_path,
        "labels.json",
        json.dumps({"Closing [something]": "1", "Opening [something]": "0"}),
    )
    assert load_classes(classes_file=labels).names == ("Opening [something]", "Closing [something]")
    assert _read_labels(labels) == ("Opening something", "Closing something")
    assert read_subset_file(labels) == ("Opening [something]", "Closing [something]")
    listed = write(tmp_path, "subset.json", '["walk", "run"]')
    assert read_subset_file(listed) == ("walk", "run")
    sets = write(tmp_path, "sets.json", json.dumps({"Opening something": ["a", "b"]}))
    out = tmp_path / "art"
    code, _, error = file_generate(labels, sets, out)
    assert (code, error) == (0, None) and (out / "candidates.parquet").is_file()


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_with_its_mark_is_read_and_without_it_refused(tmp_path, encoding):
    bom = {"utf-16": b"", "utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff"}[encoding]
    csv_text = "id,name\n0,walk\n1,caf\u00e9\n"
    path = write(tmp_path, "classes.csv", bom + csv_text.encode(encoding))
    assert load_classes(classes_file=path).names == ("walk", "caf\u00e9")
    listing = write(tmp_path, "train.txt", bom + "a/1.mp4 0\nb/2.mp4 1\n".encode(encoding))
    assert read_lines(listing) == ["a/1.mp4 0", "b/2.mp4 1"]
    subset = write(tmp_path, "subset.txt", bom + "walk\n".encode(encoding))
    assert read_subset_file(subset) == ("walk",)
    no_mark = write(tmp_path, "nomark.txt", "walk\nrun\n".encode("utf-16-le"))
    with pytest.raises(UserError) as err:
        load_classes(classes_file=no_mark, flag="--index-classes")
    assert str(err.value) == (
        f"--index-classes file {no_mark} holds NUL bytes (UTF-16 without a byte-order mark?); "
        "save it as UTF-8."
    )


@pytest.mark.parametrize("flag", ["--classes", "--index-classes", "--input", "--subsets"])
def test_latin1_files_are_one_sentence_naming_the_flag(tmp_path, flag):
    path = write(
        tmp_path, "list.json" if flag == "--input" else "list.txt", "caf\u00e9\n", "latin-1"
    )
    if flag == "--input":
        path.write_bytes('{"caf\u00e9": ["a"]}'.encode("latin-1"))
    message = f"{flag} file {path} is not UTF-8 text (it holds the byte 0xe9); save it as UTF-8."
    classes = write(tmp_path, "classes.txt", "walk\n")
    if flag == "--subsets":
        with pytest.raises(UserError) as err:
            read_subset_file(path)
        assert str(err.value) == message
        return
    args = {"--classes": ["--classes", path], "--index-classes": ["--classes", classes]}
    args["--input"] = args["--index-classes"]
    extra = {"--index-classes": ["--input", write(tmp_path, "i.json", '{"0": ["a"]}')]}
    extra["--index-classes"] += ["--index-classes", path]
    extra["--input"] = ["--input", path]
    extra["--classes"] = ["--input", write(tmp_path, "s.json", '{"walk": ["a"]}')]
    out = tmp_path / "art"
    code, _, error = run_app(
        app, "generate", "--llm", "file", *args[flag], *extra[flag], "--out", out, "--no-progress"
    )
    assert code == 1 and str(error) == message  # run_cli prints it as one `error:` line, exit 2
    assert not out.exists()


@pytest.mark.parametrize(
    "template,reason",
    [
        ("a {video} of a person {}.", "{video} is no placeholder it knows"),
        ("{} then {}", "it has more than one {}"),
        ("a {} {", "Single '{' encountered in format string"),
        ("a {} }", "Single '}' encountered in format string"),
    ],
)
def test_a_template_that_cannot_be_filled_in_is_one_sentence(tmp_path, template, reason):
    classes = write(tmp_path, "classes.txt", "walk\n")
    sets = write(tmp_path, "s.json", '{"walk": ["a", "b"]}')
    out = tmp_path / "art"
    code, _, error = file_generate(classes, sets, out)
    assert code == 0
    code, _, error = run_app(app, "score", "--artifacts", out, "--template", template)
    assert code == 1 and str(error) == (
        f"--template {template!r} cannot be filled in ({reason}): it takes one {{}} for the "
        "class name; write a literal brace twice ({{ or }})."
    )
    assert sorted(p.name for p in out.iterdir()) == [".generate.lock", "candidates.parquet"]


def test_class_names_with_braces_go_into_the_prompts_as_written():
    """The shipped prompt templates are filled with `str.format` keywords: braces or quotes
    in a class name are its text, never placeholders."""
    from storyboard_common.classes import ClassList
    from subtext_gen.generate import plan_jobs
    from subtext_gen.prompts import select_prompts

    classes = ClassList("odd", ('open {lid} "now"', "{0}"))
    jobs = plan_jobs(classes, "llm", select_prompts(None), 1, 4, set())
    assert len(jobs) == 8
    for job in jobs:
        assert ("open {lid}" if job.class_id == 0 else "{0}") in job.messages[-1]["content"]
