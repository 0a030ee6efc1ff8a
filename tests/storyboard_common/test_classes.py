import pytest

from storyboard_common.classes import class_text, load_classes, shipped_datasets
from storyboard_common.errors import UserError


def test_shipped_lists_are_the_official_ones():
    assert {"hmdb51", "ucf101"} <= set(shipped_datasets())
    hmdb = load_classes("hmdb51")
    assert len(hmdb) == 51 and list(hmdb.names) == sorted(hmdb.names)
    assert hmdb.names[:3] == ("brush_hair", "cartwheel", "catch") and hmdb.names[-1] == "wave"
    ucf = load_classes("ucf101")
    assert len(ucf) == 101 and ucf.names[0] == "ApplyEyeMakeup" and ucf.names[-1] == "YoYo"
    assert list(ucf.names) == sorted(ucf.names, key=str.lower)  # classInd order
    assert ucf.names[36] == "HandstandPushups"  # classInd line "37 HandstandPushups"


def test_txt_lists_kinetics_charades_and_classind(tmp_path):
    kinetics = tmp_path / "kinetics_400_labels.txt"
    kinetics.write_text('abseiling\nair drumming\n"answering questions"\n')
    assert load_classes(classes_file=kinetics).names == (
        "abseiling",
        "air drumming",
        "answering questions",
    )
    assert load_classes(classes_file=kinetics).name == "kinetics_400_labels"
    charades = tmp_path / "Charades_v1_classes.txt"
    charades.write_text("c000 Holding some clothes\nc001 Putting clothes somewhere\n")
    assert load_classes(classes_file=charades).names == (
        "Holding some clothes",
        "Putting clothes somewhere",
    )
    ind = tmp_path / "classInd.txt"
    ind.write_text("1 ApplyEyeMakeup\n2 ApplyLipstick\n")
    assert load_classes(classes_file=ind).names == ("ApplyEyeMakeup", "ApplyLipstick")


def test_class_list_mistakes_are_named(tmp_path):
    with pytest.raises(UserError, match="no class list ships for --dataset 'k401'"):
        load_classes("k401")
    with pytest.raises(UserError, match="exactly one of --dataset"):
        load_classes("hmdb51", tmp_path / "x.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("id,name\n0,a\n2,b\n")
    with pytest.raises(UserError, match="ids must be 0..1"):
        load_classes(classes_file=bad)
    dup = tmp_path / "dup.txt"
    dup.write_text("jump\nrun\njump\n")
    with pytest.raises(UserError, match="twice: jump"):
        load_classes(classes_file=dup)


@pytest.mark.parametrize("text", ["id,name\n", "\ufeffid,name\r\n", "id,name\n\n\n", "id,name"])
def test_a_header_only_csv_holds_no_classes(tmp_path, text):
    path = tmp_path / "classes.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserError) as caught:
        load_classes(classes_file=path)
    assert str(caught.value) == (
        f"{path} holds no classes (only its header); list one `id,name` a line."
    )
    path.write_text("0,cat\n1,dog\n")  # rows without the header: the header is missing
    with pytest.raises(UserError, match="must be a csv with the header `id,name`"):
        load_classes(classes_file=path)


@pytest.mark.parametrize(
    "name,text",
    [
        ("brush_hair", "brush hair"),
        ("ApplyEyeMakeup", "apply eye makeup"),
        ("YoYo", "yo yo"),
        ("Holding some clothes", "holding some clothes"),
        ("Watching TV", "watching TV"),
        ("air drumming", "air drumming"),
        ("HandstandPushups", "handstand pushups"),
    ],
)
def test_class_text(name, text):
    assert class_text(name) == text
