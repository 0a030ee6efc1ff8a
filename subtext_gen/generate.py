"""Candidate generation: which requests are still owed, asking the backend, parsing, storing.

Rows are keyed by (class, llm, prompt, sample). A rerun skips every key the LLM already
answered (good or unparseable) and asks again only for keys whose request failed, so an
interrupted run loses at most the requests that were in flight.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from storyboard_common.classes import ClassList, class_text
from storyboard_common.files import remove_stale_temps

from .artifacts import CANDIDATES_FILE, CandidateRow, CandidateStore, candidate_id, writer_lock
from .llm.base import Backend, Completion, Job
from .parse import parse_subtexts
from .prompts import Prompt


@dataclass(frozen=True)
class GenerateSummary:
    requested: int  # rows asked for in this run
    ok: int
    failed: int
    skipped: int  # rows already answered by an earlier run
    path: Path
    errors: tuple[str, ...]  # a few distinct failure reasons, for the summary line


def plan_jobs(
    classes: ClassList,
    llm: str,
    prompts: Sequence[Prompt],
    samples: int,
    n_subtexts: int,
    answered: set[str],
) -> list[Job]:
    """One job per (class, prompt) with the sample indices not yet answered."""
    jobs = []
    for class_id, name in enumerate(classes.names):
        for prompt in prompts:
            missing = tuple(
                s for s in range(samples) if candidate_id(name, llm, prompt.id, s) not in answered
            )
            if missing:
                messages = prompt.messages(class_text(name), n_subtexts)
                jobs.append(Job(class_id, name, prompt.id, missing, messages))
    return jobs


def rows_from_completion(
    completion: Completion, llm: str, n_subtexts: int, strict: bool
) -> list[CandidateRow]:
    """A completion -> one row per sample: parsed sub-texts, or the failure and its reason."""
    job = completion.job
    rows = []
    for sample, raw in zip(job.samples, completion.replies):
        if raw is None:
            parsed_texts, ok, error = (), False, completion.error or "no reply"
        else:
            parsed = parse_subtexts(raw, n_subtexts, strict=strict)
            parsed_texts, ok, error = (
                (parsed.sub_texts, True, None) if parsed.ok else ((), False, parsed.error)
            )
        rows.append(
            CandidateRow(
                class_id=job.class_id,
                class_name=job.class_name,
                llm=llm,
                prompt_id=job.prompt_id,
                sample=sample,
                sub_texts=parsed_texts,
                ok=ok,
                error=error,
                raw=raw,
            )
        )
    return rows


def _progress(show: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("[green]ok {task.fields[ok]}[/] [red]failed {task.fields[failed]}[/]"),
        TextColumn("remaining {task.fields[remaining]}"),
        TimeElapsedColumn(),
        disable=not show,
    )


def generate(
    classes: ClassList,
    backend: Backend,
    out_dir: Path,
    n_subtexts: int = 4,
    prompts: Sequence[Prompt] = (),
    samples: int = 1,
    strict: bool = False,
    show_progress: bool = True,
) -> GenerateSummary:
    """Ask `backend` for every missing candidate of `classes` and store the rows in `out_dir`.

    One `generate` writes a folder at a time (`writer_lock`); a second one is refused."""
    try:
        with writer_lock(out_dir):
            return _generate(
                classes, backend, out_dir, n_subtexts, prompts, samples, strict, show_progress
            )
    finally:
        backend.close()


def _generate(
    classes: ClassList,
    backend: Backend,
    out_dir: Path,
    n_subtexts: int,
    prompts: Sequence[Prompt],
    samples: int,
    strict: bool,
    show_progress: bool,
) -> GenerateSummary:
    remove_stale_temps(Path(out_dir) / CANDIDATES_FILE)  # what a killed flush left
    store = CandidateStore(out_dir, classes.names, n_subtexts)
    answered = {cid for cid, row in store.rows.items() if row.answered}
    if hasattr(backend, "plan"):  # the file backend knows its own sets
        all_jobs = backend.plan(classes, n_subtexts)
        jobs = [
            Job(j.class_id, j.class_name, j.prompt_id, missing, j.messages)
            for j in all_jobs
            if (
                missing := tuple(
                    s
                    for s in j.samples
                    if candidate_id(j.class_name, backend.llm, j.prompt_id, s) not in answered
                )
            )
        ]
        planned = sum(len(j.samples) for j in all_jobs)
    else:
        jobs = plan_jobs(classes, backend.llm, prompts, samples, n_subtexts, answered)
        planned = len(classes) * len(prompts) * samples
    total = sum(len(j.samples) for j in jobs)
    ok = failed = 0
    errors: dict[str, None] = {}
    progress = _progress(show_progress)
    task = progress.add_task(backend.llm, total=total, ok=0, failed=0, remaining=total)
    try:
        with progress:
            for completion in backend.complete(jobs):
                for row in rows_from_completion(completion, backend.llm, n_subtexts, strict):
                    store.append(row)
                    ok += row.ok
                    failed += not row.ok
                    if row.error and len(errors) < 5:
                        errors.setdefault(row.error[:200])
                done = ok + failed
                progress.update(task, completed=done, ok=ok, failed=failed, remaining=total - done)
    finally:
        store.flush()
    return GenerateSummary(
        requested=total,
        ok=ok,
        failed=failed,
        skipped=planned - total,
        path=store.path,
        errors=tuple(errors),
    )


def combined(summaries: list[GenerateSummary]) -> GenerateSummary:
    """One summary of several sources' runs into the same artifact (their first five
    distinct errors)."""
    if len(summaries) == 1:
        return summaries[0]
    return GenerateSummary(
        requested=sum(s.requested for s in summaries),
        ok=sum(s.ok for s in summaries),
        failed=sum(s.failed for s in summaries),
        skipped=sum(s.skipped for s in summaries),
        path=summaries[0].path,
        errors=tuple(dict.fromkeys(e for s in summaries for e in s.errors))[:5],
    )
