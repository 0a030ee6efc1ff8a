import json

import pytest

from storyboard_common.classes import ClassList
from storyboard_common.errors import UserError
from subtext_gen.llm.files import FileBackend, read_description_sets
from subtext_gen.parse import clean_item, parse_subtexts, unquote

EXPECTED = ("pick up the brush", "raise it to the head", "pull it through the hair", "put it down")


@pytest.mark.parametrize(
    "raw",
    [
        "1. Pick up the brush.\n2. Raise it to the head\n3. Pull it through the hair;\n"
        "4. Put it down!",
        "Sure! Here are the 4 steps:\n\n1) pick up the brush\n2) raise it to the head\n"
        "3) pull it through the hair\n4) put it down\n\nLet me know if you need more.",
        "- pick up the brush\n- raise it to the head\n* pull it through the hair\n"
        "\u2022 put it down",
        '["pick up the brush", "raise it to the head", "pull it through the hair", "put it down"]',
        '```json\n{"steps": ["Pick up the brush", "Raise it to the head", '
        '"Pull it through the hair", "Put it down"]}\n```',
        '{"1": "pick up the brush", "2": "raise it to the head", "3": "pull it through the hair",'
        ' "4": "put it down"}',
        "Shot 1: **pick up the brush**\nShot 2: raise it to the head\n"
        "Shot 3: pull it through the hair\nShot 4: put it down",
        "pick up the brush\nraise it to the head\npull it through the hair\nput it down",
        "1. pick up the brush 2. raise it to the head 3. pull it through the hair 4. put it down",
        '1. "pick up the brush"\n2. \u201craise it to the head\u201d\n3. pull it through the hair\n'
        "4. put it down\n5. smile at the mirror",  # an extra item is trimmed
        "1. pick up the brush\n2. pick up the brush\n3. raise it to the head\n"
        "4. pull it through the hair\n5. put it down",  # a duplicate is dropped
    ],
)
def test_accepted_shapes(raw):
    parsed = parse_subtexts(raw, 4)
    assert parsed.ok and tuple(t.lower() for t in parsed.sub_texts) == EXPECTED


@pytest.mark.parametrize(
    "raw,reason",
    [
        ("", "empty reply"),
        (None, "empty reply"),
        ("I'm sorry, I can't help with that.", "expected 4 sub-texts, found 1"),
        ("1. jump\n2. jump\n3. land", "expected 4 sub-texts, found 2"),
        ("[]", "expected 4 sub-texts, found 0"),
    ],
)
def test_failures_give_a_reason(raw, reason):
    parsed = parse_subtexts(raw, 4)
    assert not parsed.ok and parsed.error == reason


def test_strict_refuses_extra_items():
    raw = "1. a\n2. b\n3. c\n4. d\n5. e"
    assert parse_subtexts(raw, 4).sub_texts == ("a", "b", "c", "d")
    assert parse_subtexts(raw, 4, strict=True).error == "expected 4 sub-texts, found 5"


@pytest.mark.parametrize(
    "item,cleaned",
    [
        ('"say hi"', "say hi"),
        ('say "hi"', 'say "hi"'),
        ('"say "hi""', 'say "hi"'),
        ('"a" and "b"', '"a" and "b"'),  # two quoted phrases: neither wraps the item
        ('he said "go" "now"', 'he said "go" "now"'),
        ('""say hi""', "say hi"),
        ("'don't stop'", "don't stop"),  # an apostrophe is no closing quote
        ("\u2018don\u2019t stop\u2019", "don\u2019t stop"),
        ("\u201csay \u201chi\u201d\u201d", "say \u201chi\u201d"),
        ('1. "Pick up the brush".', "Pick up the brush"),
        ('say "hi".', 'say "hi"'),
        ('- "Step 2: lift it"', "lift it"),
        ('"', ""),
        ('""', ""),
    ],
)
def test_only_quotes_around_the_whole_item_go(item, cleaned):
    assert clean_item(item) == cleaned


def test_quoted_phrases_survive_a_reply():
    raw = '1. say "hi"\n2. "wave"\n3. "say "bye""\n4. nod "yes" twice'
    assert parse_subtexts(raw, 4).sub_texts == ('say "hi"', "wave", 'say "bye"', 'nod "yes" twice')
    json_reply = json.dumps(['say "hi"', '"wave"', '"say "bye""', "nod"])
    assert parse_subtexts(json_reply, 4).sub_texts == ('say "hi"', "wave", 'say "bye"', "nod")
    assert unquote('  "x"  ') == "x" and unquote("x") == "x"


def test_file_backend_json_and_csv_forms(tmp_path):
    classes = ClassList("t", ("brush_hair", "ApplyEyeMakeup"))
    j = tmp_path / "cupl.json"
    j.write_text(json.dumps({"brush hair": ["a", "b"], "apply eye makeup": [["c"], ["d", "e"]]}))
    assert read_description_sets(j) == {
        "brush hair": [["a", "b"]],
        "apply eye makeup": [["c"], ["d", "e"]],
    }
    jobs = FileBackend(j).plan(classes, 2)
    assert [(job.class_id, job.class_name, job.samples) for job in jobs] == [
        (0, "brush_hair", (0,)),
        (1, "ApplyEyeMakeup", (0, 1)),
    ]
    long = tmp_path / "long.csv"
    long.write_text("class,sub_text,set\nbrush_hair,a,x\nbrush_hair,b,x\nbrush_hair,c,y\n")
    assert read_description_sets(long) == {"brush_hair": [["a", "b"], ["c"]]}
    wide = tmp_path / "wide.csv"
    wide.write_text("class,s1,s2,s3\nbrush_hair,a,b,\nbrush_hair,c,d,e\n")
    assert read_description_sets(wide) == {"brush_hair": [["a", "b"], ["c", "d", "e"]]}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"brush hair": ["a"], "juggle": ["b"]}))
    with pytest.raises(UserError, match="not in t: 'juggle' \\(no near name\\)"):
        FileBackend(bad).plan(classes, 2)
