"""Artifacts: schemas and metadata as docs/design.md says, read back with pandas and pyarrow."""

import json
import math
import shutil
from collections import Counter

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from storyboard_common.classes import load_classes
from storyboard_common.clip import encode_texts
from storyboard_common.errors import UserError
from storyboard_common.subtexts import SUBTEXTS_SCHEMA, clip_tag, read_subtexts
from subtext_gen.artifacts import (
    CANDIDATES_SCHEMA,
    JOURNAL_FILE,
    TPP_SCHEMA,
    CandidateRow,
    CandidateStore,
    candidate_id,
    read_candidates,
)
from subtext_gen.generate import generate
from subtext_gen.llm.files import FileBackend
from subtext_gen.score import score
from subtext_gen.tpp import tpp
from trainer.export import subtext_source

SETS = {
    "brush_hair": [
        [
            "pick up a brush",
            "raise the brush to the head",
            "pull the brush through hair",
            "put the brush down",
        ],
        ["walk to a chair", "sit down", "eat a sandwich", "stand up"],
        ["brush hair", "brush the hair", "brushing hair", "brushes hair"],
    ],
    "cartwheel": [
        ["raise both arms", "put hands on the ground", "swing the legs over", "land on the feet"]
    ],
    "catch": [["watch the ball", "open the hands", "close hands on ball"]],  # N = 3: invalid
}
META_KEYS = {
    "clip_model",
    "clip_pretrained",
    "embed_dim",
    "n_subtexts",
    "template",
    "alpha",
    "beta",
    "version",
}


@pytest.fixture()
def candidates_dir(tmp_path, class_csv):
    path = tmp_path / "sets.json"
    path.write_text(json.dumps(SETS))
    classes = load_classes(classes_file=class_csv(list(SETS)))
    summary = generate(classes, FileBackend(path), tmp_path / "art", 4, show_progress=False)
    assert (summary.ok, summary.failed) == (4, 1)
    return tmp_path / "art"


def test_candidates_schema_and_metadata(candidates_dir):
    path = candidates_dir / "candidates.parquet"
    table = pq.read_table(path)
    assert table.schema.remove_metadata().equals(CANDIDATES_SCHEMA)
    meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    assert json.loads(meta["storyboard.classes"]) == list(SETS)
    assert meta["storyboard.n_subtexts"] == "4"
    df = pd.read_parquet(path)
    assert list(df.columns) == CANDIDATES_SCHEMA.names and len(df) == 5
    assert df["llm"].unique().tolist() == ["file:sets"]
    catch = df[df.class_name == "catch"].iloc[0]
    assert not catch.ok and catch.error == "expected 4 sub-texts, found 3"
    assert list(catch.sub_texts) == [] and json.loads(catch.raw)[0] == "watch the ball"
    first = df.iloc[0]
    assert first.candidate_id == candidate_id("brush_hair", "file:sets", "file", 0)
    assert str(df["created_at"].dtype) == "datetime64[us, UTC]"


def test_score_selects_highest_tpp_and_writes_design_schemas(candidates_dir, tiny_clip):
    summary = score(candidates_dir, tiny_clip, fallback="global")
    out = candidates_dir / clip_tag("TinyCLIP-test", "none")
    assert summary.out_dir == out and summary.scored == 4 and summary.fallback == ("catch",)

    tpp_table = pq.read_table(out / "tpp.parquet")
    assert tpp_table.schema.remove_metadata().equals(TPP_SCHEMA)
    sub_table = pq.read_table(out / "subtexts.parquet")
    assert sub_table.schema.remove_metadata().equals(SUBTEXTS_SCHEMA)
    meta = {
        k.decode()[len("storyboard.") :]: v.decode()
        for k, v in sub_table.schema.metadata.items()
        if k.startswith(b"storyboard.")
    }
    assert META_KEYS <= set(meta)
    assert meta["clip_model"] == "TinyCLIP-test" and meta["clip_pretrained"] == "none"
    assert (meta["embed_dim"], meta["n_subtexts"], meta["alpha"]) == ("32", "4", "complement")
    assert meta["template"] == "a video of a person {}."

    # TPP recomputed independently from pooled features: the best set per class is selected.
    scores = pd.read_parquet(out / "tpp.parquet")
    rows = {r.candidate_id: r for r in read_candidates(candidates_dir).rows}
    for cid, rec in scores.set_index("candidate_id").iterrows():
        row = rows[cid]
        feats = encode_texts(
            tiny_clip,
            [f"a video of a person {row.class_name.replace('_', ' ')}."] + list(row.sub_texts),
        ).pooled
        expected = tpp(torch.from_numpy(feats[0]), torch.from_numpy(feats[1:]))
        assert rec.tpp == pytest.approx(float(expected.score), rel=1e-4)
        assert list(rec.sigma) == pytest.approx(expected.sigma.tolist(), abs=1e-5)
    brush = scores[scores.class_id == 0]
    assert len(brush) == 3 and brush.selected.sum() == 1
    assert brush.loc[brush.tpp.idxmax(), "selected"]

    df = pd.read_parquet(out / "subtexts.parquet")
    assert df.class_id.tolist() == [0, 1, 2] and df.class_name.tolist() == list(SETS)
    best = brush.loc[brush.tpp.idxmax(), "candidate_id"]
    assert df.candidate_id[0] == best and list(df.sub_texts[0]) == list(rows[best].sub_texts)
    assert df.global_text[1] == "a video of a person cartwheel."
    # The global fallback repeats the global text and is marked.
    assert df.candidate_id[2] == "fallback:global" and math.isnan(df.tpp[2])
    assert list(df.sub_texts[2]) == ["a video of a person catch."] * 4
    assert meta["fallback_classes"] == "2"

    # Embeddings: float32, joint space, not normalised, tokens match the texts' word counts.
    feats = encode_texts(tiny_clip, [df.global_text[0]] + list(df.sub_texts[0]), with_tokens=True)
    assert sub_table.schema.field("global_emb").type.value_type == pa.float32()
    np.testing.assert_allclose(np.stack(df.global_emb[0]), feats.pooled[0], atol=1e-6)
    np.testing.assert_allclose(np.stack(df.sub_emb[0]), feats.pooled[1:], atol=1e-6)
    assert len(df.global_tokens[0]) == len(tiny_clip.tokenizer.encode(df.global_text[0]))
    for n, text in enumerate(df.sub_texts[0]):
        assert len(df.sub_tokens[0][n]) == len(tiny_clip.tokenizer.encode(text))
        np.testing.assert_allclose(np.stack(df.sub_tokens[0][n]), feats.tokens[1 + n], atol=1e-6)
    assert abs(np.linalg.norm(feats.pooled[0]) - 1) > 1e-3


def test_read_subtexts_gives_padded_arrays_and_masks(candidates_dir, tiny_clip):
    out = score(candidates_dir, tiny_clip, fallback="global").out_dir
    art = read_subtexts(out / "subtexts.parquet")
    C, N, D = 3, 4, 32
    assert art.global_emb.shape == (C, D) and art.sub_emb.shape == (C, N, D)
    W = art.sub_tokens.shape[2]
    assert art.sub_tokens.shape == (C, N, W, D) and art.sub_mask.shape == (C, N, W)
    lengths = [len(tiny_clip.tokenizer.encode(t)) for t in art.sub_texts[0]]
    assert art.sub_mask[0].sum(-1).tolist() == lengths
    assert W == max(len(tiny_clip.tokenizer.encode(t)) for texts in art.sub_texts for t in texts)
    assert not art.sub_tokens[0][~art.sub_mask[0]].any()  # padding is zeros and masked
    assert art.global_mask.sum(-1).tolist() == [
        len(tiny_clip.tokenizer.encode(t)) for t in art.global_texts
    ]
    assert art.meta.fallback_classes == (2,)


def test_artifact_records_which_llms_wrote_the_chosen_sets(
    candidates_dir, tiny_clip, class_csv, tmp_path
):
    """`score` records {llm: classes} of the chosen sets in the artifact's metadata, so an
    artifact moved away from its candidates still names them; older artifacts read as
    unknown, a damaged record is one error."""
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"catch": [["watch", "open the hands", "catch", "hold"]]}))
    classes = load_classes(classes_file=class_csv(list(SETS)))
    generate(classes, FileBackend(other), candidates_dir, 4, show_progress=False)
    out = score(candidates_dir, tiny_clip, fallback="global").out_dir
    wrote = {r.candidate_id: r.llm for r in read_candidates(candidates_dir).rows}
    chosen = pd.read_parquet(out / "subtexts.parquet").candidate_id
    expected = dict(Counter(wrote[c] for c in chosen if c != "fallback:global"))
    assert expected == {"file:sets": 2, "file:other": 1}  # catch has a valid set now

    alone = tmp_path / "moved" / "subtexts.parquet"
    alone.parent.mkdir()
    shutil.copy(out / "subtexts.parquet", alone)
    assert read_subtexts(alone).meta.llms == expected
    assert subtext_source(alone)["llms"] == expected

    table = pq.read_table(alone)
    meta = dict(table.schema.metadata)
    del meta[b"storyboard.llms"]
    pq.write_table(table.replace_schema_metadata(meta), alone)
    assert read_subtexts(alone).meta.llms is None and subtext_source(alone)["llms"] is None

    meta[b"storyboard.llms"] = b"[1, 2]"
    pq.write_table(table.replace_schema_metadata(meta), alone)
    with pytest.raises(UserError, match="damaged storyboard.llms"):
        read_subtexts(alone)


def test_class_without_candidates_is_one_error_listing_them(candidates_dir, tiny_clip):
    with pytest.raises(UserError, match=r"1 class\(es\) have no valid candidate .*: catch;"):
        score(candidates_dir, tiny_clip)
    assert not list(candidates_dir.glob("*/subtexts.parquet"))


def test_store_survives_a_torn_journal_and_refuses_another_class_list(tmp_path):
    store = CandidateStore(tmp_path, ["a", "b"], 4)
    row = CandidateRow(0, "a", "x", "p", 0, ("1", "2", "3", "4"), True, None, "raw")
    store.append(row)
    with open(tmp_path / JOURNAL_FILE, "a") as fh:
        fh.write('{"candidate_id": "torn')  # a crash mid-line
    reopened = CandidateStore(tmp_path, ["a", "b"], 4)
    assert list(reopened.rows) == [row.candidate_id]
    reopened.flush()
    assert not (tmp_path / JOURNAL_FILE).exists()
    assert [p.name for p in tmp_path.iterdir()] == ["candidates.parquet"]  # no temp files
    with pytest.raises(UserError, match="another class list"):
        CandidateStore(tmp_path, ["a", "c"], 4)
    with pytest.raises(UserError, match="sets of 4 sub-texts, not 5"):
        CandidateStore(tmp_path, ["a", "b"], 5)


def test_clip_tag_is_filename_safe():
    assert clip_tag("ViT-B-16", "openai") == "ViT-B-16__openai"
    assert clip_tag("hf-hub:timm/ViT-B-16-SigLIP", None) == "hf-hub-ViT-B-16-SigLIP__none"
    assert clip_tag("ViT-B-16", "tiny.pt@0123abcd") == "ViT-B-16__tiny.pt"
