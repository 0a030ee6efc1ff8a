"""`python -m subtext_gen generate|score|show`: parses flags and calls the library."""

from __future__ import annotations

import inspect
import sys
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from storyboard_common.about import DEVICES, command_app
from storyboard_common.cli_help import choice_option, with_parameters
from storyboard_common.errors import MAX_BATCH, Bounds, UserError, check_ranges, run_cli
from storyboard_common.files import artifacts_root

from .llm import REGISTRY, backend_options, check_options

app = command_app(
    "Stage one of Storyboard: LLM sub-texts for action classes, TPP selection, artifacts.",
    __package__,
    "storyboard-subtexts",
)
console = Console()


# The range of each numeric option of generate and score (`check_ranges`), checked before a
# request is sent or a file written: each far above real use (the paper samples 2 replies
# and keeps 4 sub-texts) and below where a run would never end. A backend's options carry
# their own (`subtext_gen.llm`).
BOUNDS: dict[str, Bounds] = {
    "--samples": Bounds(1, 1000),  # replies per (class, prompt): 1000 is 500x the paper's
    "--n-subtexts": Bounds(1, 100),  # sub-texts per class: TPP searches their subsets
    "--batch-size": Bounds(1, MAX_BATCH),
}

LLM = Enum("LLM", {name: name for name in REGISTRY}, type=str)  # --llm's choices


def _artifacts_dir(dataset: str | None, artifacts: Path | None) -> Path:
    if (dataset is None) == (artifacts is None):
        raise UserError("give exactly one of --dataset NAME or --artifacts DIR.")
    return Path(artifacts) if artifacts is not None else artifacts_root() / dataset


def _shipped_datasets() -> list[str]:
    from storyboard_common.classes import shipped_datasets

    return shipped_datasets()


def _scalings() -> list[str]:
    from .tpp import SCALINGS  # torch: only when a shell completes --alpha or --beta

    return list(SCALINGS)


def with_backend_options(command):
    """`command` taking every LLM backend's options (`backend_options`) after its own, as
    each backend declares them; typer reads the signature built here, and the command gets
    them in its `**options`, by name."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    backend = [
        inspect.Parameter(
            o.name,
            keyword,
            default=typer.Option(o.default, help=o.help, metavar=o.metavar),
            annotation=o.type,
        )
        for o in backend_options()
    ]
    return with_parameters(command, after=backend)


@app.command(help="Ask an LLM for N atomic actions per class; resumable, one row per reply.")
@with_backend_options
def generate(
    llm: LLM = typer.Option(
        LLM.openai,
        help=f"Backend: {', '.join(e.label or n for n, e in REGISTRY.items())}.",
    ),
    dataset: str = choice_option(
        None,
        values=_shipped_datasets,
        help="A shipped class list: hmdb51, ucf101, ssv2 or demo (6 HMDB-51 classes, the "
        "one make demo-subtexts uses), from storyboard_common/data/<NAME>/classes.csv.",
    ),
    classes: Path = typer.Option(
        None, help="A class list: csv `id,name`, JSON label map or list, or a txt list."
    ),
    samples: int = typer.Option(2, help="Replies sampled per (class, prompt)."),
    n_subtexts: int = typer.Option(4, help="N, sub-texts per class."),
    prompts: str = typer.Option(None, help="Comma-separated prompt ids (default: all)."),
    out: Path = typer.Option(None, help="Artifact folder (default artifacts/<dataset>)."),
    strict: bool = typer.Option(False, help="Fail replies with more than N items."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    **options,
) -> None:
    from storyboard_common.classes import load_classes

    from .artifacts import writer_lock
    from .generate import combined
    from .generate import generate as run
    from .llm.base import ServerUnreachable
    from .prompts import select_prompts

    check_ranges(BOUNDS, {"--samples": samples, "--n-subtexts": n_subtexts})
    check_options(llm.value, options)
    class_list = load_classes(dataset, classes)
    chosen = select_prompts(prompts)
    backend = REGISTRY[llm.value]
    backends = backend.backends(options, class_list, n_subtexts)
    out_dir = out or artifacts_root() / class_list.name
    try:
        with writer_lock(out_dir):  # held across every --input file: no other run in between
            summaries = [
                run(
                    class_list,
                    each,
                    out_dir,
                    n_subtexts=n_subtexts,
                    prompts=chosen,
                    samples=samples,
                    strict=strict,
                    show_progress=progress,
                )
                for each in backends
            ]
    except ServerUnreachable as exc:
        _stop(str(exc))
    summary = combined(summaries)
    console.print(
        f"{summary.ok} ok, {summary.failed} failed, {summary.skipped} already done -> "
        f"{summary.path}"
    )
    for reason in summary.errors:
        console.print(f"  failure: {reason}", style="red")
    for each in backends if backend.report else ():
        console.print(backend.report(each), markup=False, highlight=False)
    if summary.failed and not summary.ok:
        _stop(
            f"all {summary.failed} requests failed and nothing new was stored (the reasons "
            "are above); rerun to ask again once the cause is fixed."
        )


NOTHING_DONE_EXIT = 3  # generate wrote nothing new because requests failed


def _stop(sentence: str) -> None:
    """End `generate` with `sentence` on stderr and exit status NOTHING_DONE_EXIT: a run
    whose requests failed is not a run that is done (a script must not go on to score)."""
    print(f"error: {sentence}", file=sys.stderr)
    raise typer.Exit(NOTHING_DONE_EXIT)


@app.command(
    help="Score candidate sets with TPP, keep the best per class, write the artifacts.",
)
def score(
    tpp: bool = typer.Option(True, "--tpp/--no-tpp", help="Score with TPP (the only metric)."),
    dataset: str = typer.Option(None, help="Score artifacts/<NAME>."),
    artifacts: Path = typer.Option(None, help="Score this artifact folder."),
    clip_model: str = typer.Option(
        "ViT-B-16", help="open_clip name, shipped config name (TinyCLIP-test) or config JSON."
    ),
    clip_pretrained: str = typer.Option("openai", help="Tag, checkpoint path, or none."),
    alpha: str = choice_option(
        "complement",
        values=_scalings,
        help="Scaling of relatedness (Eq. 2): complement or identity.",
    ),
    beta: str = choice_option(
        "complement", values=_scalings, help="Scaling of diversity (Eq. 2): complement or identity."
    ),
    template: str = typer.Option("a video of a person {}.", help="Global text template."),
    fallback: str = choice_option(
        None, values=("global",), help="global: classes without candidates repeat it."
    ),
    device: str = choice_option("auto", values=DEVICES, help="auto, cpu or cuda."),
    batch_size: int = typer.Option(256, help="Texts per text-tower batch."),
) -> None:
    if not tpp:
        raise UserError("TPP is the only scoring metric; drop --no-tpp.")
    from storyboard_common.clip import load_clip

    from .score import score as run
    from .tpp import scaling

    check_ranges(BOUNDS, {"--batch-size": batch_size})
    scaling(alpha, "--alpha"), scaling(beta, "--beta")  # fail before loading CLIP
    directory = _artifacts_dir(dataset, artifacts)
    summary = run(
        directory,
        lambda: load_clip(clip_model, clip_pretrained, device),
        alpha,
        beta,
        template,
        fallback,
        batch_size,
    )
    console.print(
        f"scored {summary.scored} sets for {summary.classes} classes in {summary.seconds:.1f}s "
        f"-> {summary.out_dir}"
    )
    if summary.fallback:
        console.print(f"global-text fallback for: {', '.join(summary.fallback)}", style="yellow")


@app.command(
    help="Print per class the chosen sub-texts, their TPP and the runner-up.",
)
def show(
    dataset: str = typer.Option(None, help="Show artifacts/<NAME>."),
    artifacts: Path = typer.Option(None, help="Show this artifact folder."),
    clip_model: str = typer.Option(None, help="Which scored folder (default: the only one)."),
    clip_pretrained: str = typer.Option(None, help="Which scored folder (with --clip-model)."),
) -> None:
    from storyboard_common.clip import clip_identity
    from storyboard_common.subtexts import SUBTEXTS_FILE, scored_dir

    from .score import class_reports

    directory = _artifacts_dir(dataset, artifacts)
    if clip_model:
        scored = scored_dir(directory, clip_identity(clip_model, clip_pretrained))
    else:
        found = sorted(p.parent for p in directory.glob(f"*/{SUBTEXTS_FILE}"))
        if not found:
            raise UserError(
                f"{directory} holds no scored sub-texts: run `python -m subtext_gen score "
                "--tpp` on it first."
            )
        if len(found) != 1:
            raise UserError(
                f"{directory} holds {len(found)} scored folders; pick one with --clip-model "
                "and --clip-pretrained."
            )
        scored = found[0]
    table = Table(title=f"{scored}", show_lines=True)
    for col in ("class", "chosen sub-texts", "TPP", "runner-up", "TPP "):
        table.add_column(col)
    for r in class_reports(directory, scored):  # texts escaped: `[redacted]`, SSv2's `[...]`
        table.add_row(
            escape(f"{r.class_id} {r.class_name}"),
            ("[yellow](global fallback)[/] " if r.fallback else "")
            + escape("\n".join(r.sub_texts)),
            f"{r.tpp:.4f}",
            escape("\n".join(r.runner_up)) if r.runner_up else "-",
            f"{r.runner_up_tpp:.4f}" if r.runner_up_tpp is not None else "-",
        )
    console.print(table)


def main() -> None:
    run_cli(app)


if __name__ == "__main__":
    main()
