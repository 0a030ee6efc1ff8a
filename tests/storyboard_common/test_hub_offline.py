"""Hub weights with no network: a loader fails in seconds with one sentence naming the
repository, the download command, HF_HUB_OFFLINE and HF_HOME; weights in the local cache
load with no network call at all.

No network is a loopback port where nothing listens (refused), a loopback server that
accepts and never answers (only the probe's timeout ends the wait), or HF_HUB_OFFLINE=1."""

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import open_clip  # noqa: F401  (imported up front: the timings are the hub's, not the import's)
import pytest

from storyboard_common import hub
from storyboard_common.clip import clip_identity, encode_texts, load_clip
from storyboard_common.errors import UserError
from storyboard_common.resources import data_path
from testkit.cli import REPO
from testkit.hub import Blackhole, cache_repo, refused_endpoint

TAG_REPO = "timm/vit_base_patch16_clip_224.openai"
SECONDS = 10  # what a user may wait for the sentence (the probe itself: hub.PROBE_SECONDS)


@pytest.fixture(params=["refused", "blackhole", "offline"])
def no_hub(request, hub_env):
    """-> (how, the Blackhole, which counts connections): the Hub out of reach."""
    with Blackhole() as hole:
        endpoint = refused_endpoint() if request.param == "refused" else hole.url
        hub_env(endpoint, offline=request.param == "offline")
        yield request.param, hole


def _fails_fast(call) -> str:
    start = time.monotonic()
    with pytest.raises(UserError) as caught:
        call()
    assert time.monotonic() - start < SECONDS
    message = str(caught.value)
    assert "\n" not in message and "HF_HUB_OFFLINE" in message and "HF_HOME" in message
    return message


def test_a_pretrained_tag_not_cached_fails_in_seconds(no_hub):
    how, hole = no_hub
    message = _fails_fast(lambda: load_clip("ViT-B-16", "openai", "cpu"))
    assert f"`hf download {TAG_REPO} open_clip_pytorch_model.bin`" in message
    assert message.startswith(
        f"CLIP weights ViT-B-16 openai (file open_clip_pytorch_model.bin of {TAG_REPO})"
    )
    assert "--clip-pretrained" in message
    # One attempt, no retries; none at all under HF_HUB_OFFLINE=1.
    assert hole.connections == (1 if how == "blackhole" else 0)
    if how == "offline":
        assert "HF_HUB_OFFLINE=1 forbids" in message
    else:
        why = "ReadTimeout" if how == "blackhole" else "ConnectError"
        assert f"cannot be reached ({why}" in message


@pytest.mark.parametrize(
    "loader, command, instead",
    [
        ("hf-hub-clip", "storyboard/clip", "--clip-model local-dir:"),
        ("llava", "llava-hf/llava-v1.6-mistral-7b-hf", "--model"),
        ("hf-hub-export", "storyboard/model --revision v1", "the model folder"),
    ],
)
def test_every_hub_loader_fails_in_seconds(hub_env, loader, command, instead):
    from subtext_gen.llm.llava import LlavaBackend
    from trainer.export import hub_snapshot

    hub_env(refused_endpoint())
    calls = {
        "hf-hub-clip": lambda: load_clip("hf-hub:storyboard/clip", "none", "cpu"),
        "llava": lambda: LlavaBackend(device="cpu"),
        "hf-hub-export": lambda: hub_snapshot("hf-hub:storyboard/model@v1"),
    }
    message = _fails_fast(calls[loader])
    assert f"`hf download {command}`" in message and instead in message


def test_a_malformed_repository_id_is_one_sentence(hub_env):
    from subtext_gen.llm.llava import LlavaBackend
    from trainer.export import hub_snapshot

    hub_env(refused_endpoint())
    for call, flag in [
        (lambda: LlavaBackend(model="my llava!", device="cpu"), "--model"),
        (lambda: load_clip("hf-hub:my clip!", "none", "cpu"), "--clip-model"),
        (lambda: hub_snapshot("hf-hub:my model!"), "model folder"),
    ]:
        with pytest.raises(
            UserError, match="is not a repository id of the Hugging Face Hub"
        ) as caught:
            call()
        assert flag in str(caught.value)


@pytest.fixture()
def cached_tiny_clip(hub_env, tiny_clip, monkeypatch, tmp_path):
    """The tiny CLIP in the cache, as open_clip's tag `TinyCLIP-test`/`tiny` and as an
    open_clip repository; the Hub is a blackhole. -> the Blackhole."""
    import open_clip.pretrained
    from safetensors.torch import save_file

    folder = tmp_path / "tiny-clip"
    folder.mkdir()
    state = {k: v.contiguous() for k, v in tiny_clip.model.state_dict().items()}
    save_file(state, folder / "open_clip_model.safetensors")
    config = json.loads(data_path("clip", "TinyCLIP-test.json").read_text())
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": config}))
    tag = {"tiny": {"hf_hub": "storyboard/tiny-clip/"}}
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, "TinyCLIP-test", tag)
    with Blackhole() as hole:
        cache_repo(hub_env(hole.url), "storyboard/tiny-clip", folder)
        yield hole


def test_cached_clip_weights_load_with_no_network_call(cached_tiny_clip, tiny_clip):
    texts = ["a video of a person jump.", "lift the arm"]
    expected = encode_texts(tiny_clip, texts).pooled
    tagged = load_clip("TinyCLIP-test", "tiny", "cpu")
    from_hub = load_clip("hf-hub:storyboard/tiny-clip", "none", "cpu")
    assert cached_tiny_clip.connections == 0  # not even a look for a newer file
    for clip in (tagged, from_hub):
        np.testing.assert_allclose(encode_texts(clip, texts).pooled, expected, atol=1e-6)
    assert (tagged.model_id, tagged.pretrained_id) == ("TinyCLIP-test", "tiny")
    assert (from_hub.model_id, from_hub.pretrained_id) == ("hf-hub:storyboard/tiny-clip", "none")
    assert clip_identity("hf-hub:storyboard/tiny-clip", "none") == (
        "hf-hub:storyboard/tiny-clip",
        "none",
    )


def test_a_probe_that_hangs_anywhere_is_cut_short(hub_env, monkeypatch):
    """Name resolution is outside a request's timeout: the probe's bound holds anyway."""
    import huggingface_hub

    class Hanging:
        def get(self, *args, **kwargs):
            time.sleep(60)

    hub_env(refused_endpoint())
    monkeypatch.setattr(huggingface_hub, "get_session", Hanging)
    start = time.monotonic()
    with pytest.raises(UserError, match=r"cannot be reached \(TimeoutError: no answer within 3 s"):
        hub.require_hub("org/repo", "the model", "pass a folder")
    assert time.monotonic() - start < hub.PROBE_SECONDS + 2


class _Status(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.parametrize(
    "status, expected",
    [(200, None), (404, "is not on the Hugging Face Hub"), (503, "answered HTTP 503")],
)
def test_a_hub_that_answers(hub_env, status, expected):
    """Reachable: a download may follow; no such repository, or a Hub in trouble: a sentence."""
    handler = type("Handler", (_Status,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        hub_env(f"http://127.0.0.1:{server.server_address[1]}")
        if expected is None:
            assert hub.require_hub("org/repo", "the model", "pass a folder") is None
        else:
            with pytest.raises(UserError, match=expected) as caught:
                hub.require_hub("org/repo", "the model", "pass a folder")
            assert "org/repo" in str(caught.value) and "pass a folder" in str(caught.value)
    finally:
        server.shutdown()
        server.server_close()


# The command's own seconds, after its imports: on 2 busy cores importing open_clip alone
# takes 6-15 s (2 on a GPU machine); the hub check must not add more than a few.
TIMED_CLI = (
    "import atexit, sys, time\n"
    "from subtext_gen.__main__ import main\n"
    "start = time.monotonic()\n"
    "atexit.register(lambda: print(f'seconds {time.monotonic() - start:.2f}', file=sys.stderr))\n"
    "sys.argv[0] = 'subtext_gen'\n"
    "main()\n"
)


@pytest.mark.parametrize(
    "command, how", [("score", "blackhole"), ("llava", "refused"), ("llava", "offline")]
)
def test_the_cli_fails_in_seconds_with_one_sentence_and_writes_nothing(tmp_path, command, how):
    from storyboard_common.classes import load_classes
    from subtext_gen.generate import generate
    from subtext_gen.llm.files import FileBackend

    out = tmp_path / "art"
    classes = data_path("demo", "classes.csv")
    if command == "score":
        demo = load_classes(classes_file=classes)
        generate(demo, FileBackend(data_path("demo", "candidates.json")), out, show_progress=False)
        args = ["score", "--artifacts", str(out), "--device", "cpu"]
        repo, preload = TAG_REPO, "import open_clip\n"
    else:  # the backend looks before it imports torch and transformers
        args = ["generate", "--llm", "llava", "--classes", str(classes), "--out", str(out)]
        repo, preload = "llava-hf/llava-v1.6-mistral-7b-hf", ""
    before = sorted(p.name for p in out.glob("*")) if out.exists() else None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env["HF_HOME"] = str(tmp_path / "hf-home")
    if how == "offline":
        env["HF_HUB_OFFLINE"] = "1"
    with Blackhole() as hole:
        env["HF_ENDPOINT"] = hole.url if how == "blackhole" else refused_endpoint()
        done = subprocess.run(
            [sys.executable, "-c", preload + TIMED_CLI, *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
    error, seconds = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert float(seconds.split()[1]) < SECONDS
    assert error.startswith("error: ") and f"`hf download {repo}" in error
    assert "HF_HUB_OFFLINE" in error and "HF_HOME" in error
    assert (sorted(p.name for p in out.glob("*")) if out.exists() else None) == before
