"""The llava backend against a tiny, randomly initialised LLaVA-NeXT model built offline."""

from __future__ import annotations

import pytest

from storyboard_common.errors import UserError
from subtext_gen.llm.base import Job

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SENTENCES = [
    "Break the action class into short atomic actions.",
    "You are a helpful assistant that describes videos.",
    "[INST] list the steps of playing guitar [/INST]",
    "1. pick up the guitar 2. strum the strings 3. press the frets",
]
# Mistral-like; refuses a system role, as many LLaVA templates do, so the backend must merge it.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'user' %}[INST] {% for c in m['content'] %}{{ c['text'] }}{% endfor %}"
    " [/INST]"
    "{% elif m['role'] == 'assistant' %}{% for c in m['content'] %}{{ c['text'] }}{% endfor %}"
    "{{ eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported') }}{% endif %}"
    "{% endfor %}"
)


def _build_tiny_llava(path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        CLIPVisionConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
        MistralConfig,
        PreTrainedTokenizerFast,
    )

    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>", "<image>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    raw.train_from_iterator(SENTENCES * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
        chat_template=CHAT_TEMPLATE,
    )
    pinpoints = [[32, 32], [32, 64], [64, 32]]
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": 32},
        crop_size={"height": 32, "width": 32},
        image_grid_pinpoints=pinpoints,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
        patch_size=16,
        vision_feature_select_strategy="default",
    )
    text_config = MistralConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision_config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=16,
        projection_dim=32,
    )
    config = LlavaNextConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    model = LlavaNextForConditionalGeneration(config)
    model.save_pretrained(path)
    processor.save_pretrained(path)


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llava")
    _build_tiny_llava(path)
    return path


USER_PROMPTS = [
    "list the steps of playing guitar",
    "Break the action class into short atomic actions: archery",
    "describes videos",
]


def _jobs() -> list[Job]:
    samples = [(0, 1), (0,), (2, 3, 4)]
    return [
        Job(
            class_id=i,
            class_name=f"class {i}",
            prompt_id="p0",
            samples=s,
            messages=(
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": USER_PROMPTS[i]},
            ),
        )
        for i, s in enumerate(samples)
    ]


def _run(path, **kwargs):
    from subtext_gen.llm.llava import LlavaBackend

    backend = LlavaBackend(model=str(path), device="cpu", max_new_tokens=8, **kwargs)
    try:
        return backend.llm, list(backend.complete(_jobs()))
    finally:
        backend.close()


def test_local_tiny_llava_completes_every_job_reproducibly(tiny_llava):
    llm, completions = _run(tiny_llava, batch_size=4, seed=3)
    assert llm == f"llava:{tiny_llava}"
    jobs = _jobs()
    assert sorted(c.job.class_id for c in completions) == [0, 1, 2]
    for completion in completions:
        job = jobs[completion.job.class_id]
        assert completion.job == job
        assert completion.error is None
        assert len(completion.replies) == len(job.samples)
        for reply in completion.replies:
            assert isinstance(reply, str)
            # Only the new tokens are decoded: no chat markup, no echo of the prompt.
            assert "[INST]" not in reply and "[/INST]" not in reply
            assert not reply.startswith(USER_PROMPTS[job.class_id])
            assert "You are a helpful assistant" not in reply

    _, again = _run(tiny_llava, batch_size=4, seed=3)
    by_class = {c.job.class_id: c.replies for c in completions}
    assert {c.job.class_id: c.replies for c in again} == by_class


def test_greedy_and_failed_batches(tiny_llava, monkeypatch):
    from subtext_gen.llm.llava import LlavaBackend

    backend = LlavaBackend(model=str(tiny_llava), device="cpu", max_new_tokens=4, temperature=0)
    try:
        greedy = {c.job.class_id: c.replies for c in backend.complete(_jobs())}
        # Greedy decoding: every sample of a job is the same text.
        assert all(len(set(replies)) == 1 for replies in greedy.values())

        def out_of_memory(prompts):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

        monkeypatch.setattr(backend, "_generate", out_of_memory)
        failed = list(backend.complete(_jobs()))
    finally:
        backend.close()
    assert len(failed) == 3
    for completion in failed:
        assert completion.replies == (None,) * len(completion.job.samples)
        assert completion.error == "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"


def test_hub_model_missing_offline_is_a_user_error(monkeypatch):
    from subtext_gen.llm.llava import LlavaBackend

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    with pytest.raises(UserError, match="nonexistent-org/nonexistent-llava") as info:
        LlavaBackend(model="nonexistent-org/nonexistent-llava", device="cpu")
    assert "hf download nonexistent-org/nonexistent-llava" in str(info.value)
    assert "\n" not in str(info.value)


def test_a_hub_model_in_the_cache_loads_with_no_network_call(tiny_llava, hub_env):
    """A hub id whose files are in the Hugging Face cache, with a Hub that never answers."""
    from subtext_gen.llm.llava import LlavaBackend
    from testkit.hub import Blackhole, cache_repo

    with Blackhole() as hole:
        cache_repo(hub_env(hole.url), "storyboard/tiny-llava", tiny_llava)
        backend = LlavaBackend(model="storyboard/tiny-llava", device="cpu")
        try:
            assert backend.model.config.model_type == "llava_next"
            assert backend.tokenizer.padding_side == "left"
        finally:
            backend.close()
    assert hole.connections == 0


def test_missing_or_incomplete_local_directory_is_a_user_error(tmp_path):
    from subtext_gen.llm.llava import LlavaBackend

    missing = tmp_path / "no-such-llava"
    with pytest.raises(UserError, match="no-such-llava.*does not exist"):
        LlavaBackend(model=str(missing), device="cpu")

    empty = tmp_path / "empty-llava"
    empty.mkdir()
    with pytest.raises(UserError, match="empty-llava.*cannot be loaded") as info:
        LlavaBackend(model=str(empty), device="cpu")
    assert "\n" not in str(info.value)


def test_generate_command_with_a_local_llava_stores_every_reply(tiny_llava, tmp_path):
    """`python -m subtext_gen generate --llm llava --model DIR`, through the real CLI."""
    import subprocess
    import sys

    import pandas as pd

    from testkit.cli import REPO

    classes = tmp_path / "classes.csv"
    classes.write_text("id,name\n0,brush_hair\n1,cartwheel\n")
    out = tmp_path / "art"
    cmd = [
        sys.executable,
        "-m",
        "subtext_gen",
        "generate",
        "--llm",
        "llava",
        "--model",
        str(tiny_llava),
        "--classes",
        str(classes),
        "--prompts",
        "steps,json",
        "--samples",
        "2",
        "--out",
        str(out),
        "--no-progress",
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    df = pd.read_parquet(out / "candidates.parquet")
    assert len(df) == 8 and set(df.llm) == {f"llava:{tiny_llava}"}
    # Random weights reply junk: stored as failed rows with their raw text and a reason.
    assert df.raw.map(lambda r: isinstance(r, str)).all()
    assert (df.ok | df.error.str.startswith("expected 4 sub-texts")).all()
