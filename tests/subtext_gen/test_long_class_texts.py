"""Class texts longer than CLIP's context (77 tokens): `score` refuses two classes whose
texts CLIP reads as one once cut, naming them, and warns in one line for each text it cuts,
naming the class and the tokens cut. The tiny CLIP has CLIP's tokenizer and context."""

import json
import warnings

import pytest

from storyboard_common.clip import context_length, tokens_cut
from storyboard_common.errors import UserError
from subtext_gen.__main__ import app
from subtext_gen.score import check_cut_class_texts
from testkit.cli import TINY_CLIP_CONFIG, run_app

# "a video of a person {}.": SOT, 5 words, the name's words, "." and EOT: 8 + words tokens
FILLER = " ".join(["a"] * 80)  # 88 tokens with a one-word ending: 11 beyond 77, 12 with two


def test_tokens_cut_count_what_the_context_drops(tiny_clip):
    """SOT + k one-token words + EOT: k + 2 tokens, of which 77 are read."""
    texts = [" ".join(["a"] * k) for k in (1, 75, 76, 100)] + ["run"]
    assert context_length(tiny_clip) == 77
    assert tokens_cut(tiny_clip, texts).tolist() == [0, 0, 1, 25, 0]
    assert tokens_cut(tiny_clip, []).tolist() == []


def scored(tmp_path, class_csv, names):
    """generate (file backend) then score the classes `names` with the tiny CLIP ->
    (exit code, UserError or None, warnings' texts, the scored folder)."""
    sets = tmp_path / "sets.json"
    words = ("lift", "comb", "stroke", "stop")
    sets.write_text(json.dumps({n: [f"{w} {n.split()[-1]}" for w in words] for n in names}))
    out = tmp_path / "art"
    args = ("--llm", "file", "--classes", class_csv(names), "--input", sets, "--out", out)
    code, output, error = run_app(app, "generate", *args, "--no-progress")
    assert code == 0, (output, error)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, error = run_app(
            app, "score", "--artifacts", out, "--clip-model", TINY_CLIP_CONFIG,
            "--clip-pretrained", "none", "--device", "cpu",
        )  # fmt: skip
    return code, error, [str(w.message) for w in caught], out / "TinyCLIP-test__none"


def test_two_classes_the_same_once_cut_are_refused_naming_both(tmp_path, class_csv):
    names = ["walk", f"{FILLER} run", f"{FILLER} jump"]
    code, error, _, folder = scored(tmp_path, class_csv, names)
    assert code != 0 and error is not None
    message = str(error)
    assert message.startswith(
        f"classes {names[1]!r} and {names[2]!r} have the same text once cut to CLIP "
        "TinyCLIP-test's 77-token context: shorten their names or the --template so they "
        "differ within it."
    ), message
    assert "\n" not in message
    assert not folder.exists()  # nothing written


def test_a_cut_text_is_one_warning_line_naming_the_class_and_the_tokens_cut(tmp_path, class_csv):
    names = ["walk", f"run {FILLER}", f"jump far {FILLER}"]
    code, error, said, folder = scored(tmp_path, class_csv, names)
    assert code == 0 and error is None
    assert (folder / "subtexts.parquet").is_file()
    cut = [m for m in said if "context" in m]
    assert cut == [
        f"class {names[1]!r}: its global text is 12 token(s) longer than CLIP TinyCLIP-test's "
        "77-token context; CLIP reads it without them.",
        f"class {names[2]!r}: its global text is 13 token(s) longer than CLIP TinyCLIP-test's "
        "77-token context; CLIP reads it without them.",
    ], said


def test_texts_the_tokenizer_folds_into_one_are_refused_without_a_cut(tiny_clip):
    """CLIP's tokenizer lowercases and folds spacing: "Jump  high." reads as "jump high."."""
    texts = ["a video of a person jump high.", "a video of a person Jump  high."]
    with pytest.raises(UserError, match=r"^classes 'a' and 'b' have the same text to CLIP "):
        check_cut_class_texts(tiny_clip, ["a", "b"], texts)
    check_cut_class_texts(tiny_clip, ["a", "b"], [texts[0], "a video of a person jump."])
