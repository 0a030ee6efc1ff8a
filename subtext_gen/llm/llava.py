"""The `llava` backend: a local LLaVA(-NeXT) model through transformers, text-only prompts.

Each job is expanded into one prompt row per missing sample; rows are generated in batches
of `batch_size` with left padding and sampled at `temperature` (greedy at 0). The global
torch RNG is seeded once per backend, before its first batch, so a run is reproducible for
a given model, device, batch size and job list. A batch that fails (CUDA out of memory,
say) yields failed completions for its rows and the run goes on.

A hub id loads from the Hugging Face cache with no network call; what the cache lacks is
downloaded only once the Hub answers, and where it does not, the backend fails in seconds
with the `hf download` command to run (`storyboard_common.hub`).

torch and transformers are imported here only, so the other backends never pay for them.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from storyboard_common import hub
from storyboard_common.classes import ClassList
from storyboard_common.errors import MAX_BATCH, MAX_SEED, Bounds, UserError

from .base import MODEL, TEMPERATURE, BackendOption, Completion, Job, LLMBackend

DEFAULT_MODEL = "llava-hf/llava-v1.6-mistral-7b-hf"
_INSTEAD = "pass --model /path/to/a/local/copy"


def _looks_local(model: str) -> bool:
    """A path rather than a hub id ("org/name"): absolute, relative, home, or existing."""
    return (
        os.path.isabs(model)
        or model.startswith((".", "~"))
        or model.count("/") > 1
        or "\\" in model
        or os.path.exists(model)
    )


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip().splitlines()
    line = text[0].strip() if text else ""
    line = f"{type(exc).__name__}: {line}" if line else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _from_pretrained(source: str, dtype) -> tuple:
    """The processor and the model of a folder or a hub id."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    return (
        AutoProcessor.from_pretrained(source),
        AutoModelForImageTextToText.from_pretrained(source, dtype=dtype),
    )


def _cached_or_downloaded(model: str, dtype, cache_only: bool) -> tuple:
    """Hub id `model` from its snapshot folder in the cache (`cache_only`: a folder, so that
    transformers makes no network call, not even for its user agent), or downloaded."""
    from huggingface_hub import snapshot_download

    if not cache_only:
        return _from_pretrained(model, dtype)
    return _from_pretrained(snapshot_download(model, local_files_only=True), dtype)


def _chat(messages: Sequence[dict[str, str]], merge_system: bool) -> list[dict]:
    """Plain {"role", "content": str} messages in the processor's list-of-parts format."""
    turns = [(m["role"], m["content"]) for m in messages]
    if merge_system:
        system = "\n\n".join(text for role, text in turns if role == "system")
        turns = [(role, text) for role, text in turns if role != "system"]
        if system:
            for i, (role, text) in enumerate(turns):
                if role == "user":
                    turns[i] = (role, f"{system}\n\n{text}")
                    break
            else:
                turns.insert(0, ("user", system))
    return [{"role": role, "content": [{"type": "text", "text": text}]} for role, text in turns]


class LlavaBackend:
    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        batch_size: int = 8,
        max_new_tokens: int = 160,
        temperature: float = 0.7,
        device: str | None = None,
        seed: int = 0,
    ):
        if batch_size < 1:
            raise UserError("--batch-size must be at least 1.")
        if temperature < 0:
            raise UserError("--temperature must not be negative.")
        local = _looks_local(model)
        source = str(Path(model).expanduser()) if local else model
        if local and not Path(source).is_dir():
            raise UserError(
                f"LLaVA model directory {model!r} does not exist: pass --model with a folder "
                "written by save_pretrained or `hf download`, or a hub id such as "
                f"{DEFAULT_MODEL!r}."
            )
        what = f"LLaVA model {model}"
        if not local and hub.cached_file(model, ["config.json"]) is None:
            hub.require_hub(model, what, _INSTEAD)  # before torch loads: an answer in seconds
        import torch

        self.model_name = model
        self.llm = f"llava:{model}"
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.seed = seed
        self._seeded = False
        self._torch = torch
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32

        try:
            if local:
                self.processor, self.model = _from_pretrained(source, dtype)
            else:  # from the cache alone, with no network call, unless it lacks files
                load = functools.partial(_cached_or_downloaded, model, dtype)
                self.processor, self.model = hub.cache_first(load, model, what, _INSTEAD)
        except (OSError, ValueError) as exc:
            # Files missing or not downloadable: OSError (EnvironmentError). A folder with no
            # processor files, an unknown model type or a malformed id: ValueError.
            if local:
                raise UserError(
                    f"LLaVA model directory {model!r} cannot be loaded ({_first_line(exc)}): it "
                    "needs the config, weights and processor files of an image-text-to-text "
                    "model, as written by save_pretrained or `hf download`."
                ) from exc
            if isinstance(exc, OSError):
                raise UserError(
                    f"LLaVA model {model!r} could not be downloaded ({_first_line(exc)}): check "
                    f"that you may download it (`hf download {model}`), or {_INSTEAD}."
                ) from exc
            raise UserError(
                f"LLaVA model {model!r} cannot be loaded ({_first_line(exc)}): pass a hub id of "
                "an image-text-to-text model or a local copy of one."
            ) from exc
        self.model.to(self.device)
        self.model.eval()

        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        self.tokenizer = tokenizer
        self._merge_system: bool | None = None  # learnt on the first prompt

    # -- prompts -------------------------------------------------------------------------

    def _render(self, messages: Sequence[dict[str, str]]) -> str:
        """The prompt text; templates that refuse a system role get it merged into the user turn."""
        if self._merge_system is not True:
            try:
                text = self.processor.apply_chat_template(
                    _chat(messages, merge_system=False), add_generation_prompt=True, tokenize=False
                )
                if any(m["role"] == "system" for m in messages):
                    self._merge_system = False
                return text
            except Exception:  # jinja's TemplateError or raise_exception(...) in the template
                if self._merge_system is False or not any(m["role"] == "system" for m in messages):
                    raise
                self._merge_system = True
        return self.processor.apply_chat_template(
            _chat(messages, merge_system=True), add_generation_prompt=True, tokenize=False
        )

    # -- generation ----------------------------------------------------------------------

    def _generate(self, prompts: list[str]) -> list[str]:
        torch = self._torch
        enc = self.tokenizer(
            prompts, return_tensors="pt", padding=True, add_special_tokens=False
        ).to(self.device)
        sampling = (
            {"do_sample": True, "temperature": self.temperature}
            if self.temperature > 0
            else {"do_sample": False}
        )
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=enc["input_ids"],
                attention_mask=enc["attention_mask"],
                max_new_tokens=self.max_new_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
                **sampling,
            )
        new = out[:, enc["input_ids"].shape[1] :].cpu()
        return [text.strip() for text in self.tokenizer.batch_decode(new, skip_special_tokens=True)]

    def complete(self, jobs: Sequence[Job]) -> Iterator[Completion]:
        torch = self._torch
        if not self._seeded:
            torch.manual_seed(self.seed)
            self._seeded = True
        for job in jobs:
            if not job.samples:
                yield Completion(job, ())
        jobs = [job for job in jobs if job.samples]

        # Render every prompt first (a broken template fails fast, before any generation),
        # then order jobs by prompt length so batches pad little; a job's rows stay adjacent.
        prompts = [self._render(job.messages) for job in jobs]
        lengths = [len(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        order = sorted(range(len(jobs)), key=lambda i: lengths[i])
        rows = [(i, k) for i in order for k in range(len(jobs[i].samples))]

        replies: list[list[str | None]] = [[None] * len(job.samples) for job in jobs]
        errors: list[str | None] = [None] * len(jobs)
        pending = [len(job.samples) for job in jobs]
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start : start + self.batch_size]
            try:
                texts: list[str | None] = list(self._generate([prompts[i] for i, _ in batch]))
            except RuntimeError as exc:  # CUDA OOM and friends: fail these rows, go on
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                message = _first_line(exc)
                texts = [None] * len(batch)
                for i, _ in batch:
                    errors[i] = errors[i] or message
            for (i, k), text in zip(batch, texts, strict=True):
                replies[i][k] = text
                pending[i] -= 1
                if pending[i] == 0:
                    yield Completion(jobs[i], tuple(replies[i]), errors[i])

    def close(self) -> None:
        torch = self._torch
        for name in ("model", "processor", "tokenizer"):
            if hasattr(self, name):
                delattr(self, name)
        if self.device.type == "cuda" and torch.cuda.is_available():
            torch.cuda.empty_cache()


OPTIONS = (
    MODEL,
    TEMPERATURE,
    BackendOption(
        "batch_size",
        8,
        "Prompts LLaVA answers in one batch (llava).",
        int,
        bounds=Bounds(1, MAX_BATCH),
    ),
    BackendOption(
        "seed", 0, "Sampling seed (llava).", int, bounds=Bounds(0, MAX_SEED)
    ),  # torch.manual_seed's
)


def backends(options: Mapping[str, Any], classes: ClassList, n_subtexts: int) -> list[LlavaBackend]:
    """`--llm llava`: the model loaded once, on CUDA where there is one."""
    model = {"model": options["model"]} if options["model"] else {}
    return [
        LlavaBackend(
            **model,
            batch_size=options["batch_size"],
            temperature=options["temperature"],
            seed=options["seed"],
        )
    ]


BACKEND = LLMBackend(OPTIONS, backends)
