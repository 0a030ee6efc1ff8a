"""`python -m trainer reproduce ROW`: one row of the paper's tables, run with the row's
protocol and written beside the paper's number.

Rows are data (`paper_rows.yaml`, or a user's file in its format). Planning is pure: a row
-> the runs it averages (`plan`). Execution trains each run into its own folder with the
trainer's own `--resume` (a finished run is read, not retrained; a killed one continues),
or evaluates another row's models zero-shot. The report (`reproduction`,
`reproduction_markdown`) is the mean and 95% t-interval (`trainer.metrics.spread`) over
the runs, the paper's number, the settings, the hardware and the time.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml

from storyboard_common.errors import UserError
from storyboard_common.files import atomic_write_json, atomic_write_text

from .checkpoints import json_values
from .config import absolute, resolve_config, resolved_config, setting_differences
from .metrics import spread
from .report import read_metrics
from .settings import RunConfig, declared, flag_name

ROWS_FILE = Path(__file__).with_name("paper_rows.yaml")
METRICS = ("top1", "top5", "mean_class_acc", "map")
_REQUIRED = ("id", "table", "description", "metric", "folds", "gpu_hours_per_run")


@dataclass(frozen=True)
class Row:
    """One row of a table: the runs it averages and the paper's number (None: not
    transcribed, `paper_note` says so)."""

    id: str
    table: int | str
    description: str
    metric: str
    folds: tuple[str, ...]
    gpu_hours_per_run: float
    gpu_hours_derivation: str = ""
    paper: float | None = None
    paper_note: str = ""
    preset: str | None = None
    settings: dict = dataclasses.field(default_factory=dict)
    seeds: tuple[int, ...] = (1,)
    zero_shot: dict | None = None  # {from: row id, dataset, settings: eval options}


@dataclass(frozen=True)
class PlannedRun:
    """A training run (`settings`: the RunConfig's, `out` included) or a zero-shot
    evaluation of a training run's folder (`source`) with `evaluate` (evaluate_checkpoint's
    arguments)."""

    row: str
    name: str
    preset: str | None = None
    settings: dict = dataclasses.field(default_factory=dict)
    source: Path | None = None
    evaluate: dict | None = None

    @property
    def is_training(self) -> bool:
        return self.evaluate is None


def load_rows(path: Path | None = None) -> dict[str, Row]:
    """The rows of a row file (default: the shipped one), by id; a malformed row is refused
    naming the file and the row."""
    path = Path(path) if path is not None else ROWS_FILE
    try:
        entries = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"--rows {path}: cannot be read as YAML ({exc}).") from None
    if not isinstance(entries, list):
        raise UserError(f"--rows {path}: expected a list of rows.")
    rows: dict[str, Row] = {}
    known = {f.name for f in dataclasses.fields(Row)}
    for i, entry in enumerate(entries):
        where = f"--rows {path}: row {entry.get('id', i + 1) if isinstance(entry, dict) else i + 1}"
        if not isinstance(entry, dict):
            raise UserError(f"{where} is not a mapping.")
        missing = [k for k in _REQUIRED if k not in entry]
        unknown = sorted(set(entry) - known)
        if missing or unknown:
            what = f"lacks {', '.join(missing)}" if missing else f"has unknown {', '.join(unknown)}"
            raise UserError(f"{where} {what}.")
        if entry["metric"] not in METRICS:
            raise UserError(f"{where}: metric must be one of {', '.join(METRICS)}.")
        zero_shot = entry.get("zero_shot")
        if zero_shot is not None and (entry.get("preset") or entry.get("settings")):
            raise UserError(f"{where}: a zero_shot row trains nothing (no preset or settings).")
        if zero_shot is not None and not (isinstance(zero_shot, dict) and "dataset" in zero_shot):
            raise UserError(f"{where}: zero_shot needs from (a row) and dataset.")
        row = Row(
            **{
                **entry,
                "folds": tuple(str(f) for f in entry["folds"]),
                "seeds": tuple(entry.get("seeds", (1,))),
                "settings": dict(entry.get("settings") or {}),
            }
        )
        if row.id in rows:
            raise UserError(f"--rows {path}: row {row.id} appears twice.")
        rows[row.id] = row
    for row in rows.values():
        source = (row.zero_shot or {}).get("from")
        if row.zero_shot is not None and (source not in rows or rows[source].zero_shot):
            raise UserError(f"--rows {path}: row {row.id} evaluates {source!r}, not a trained row.")
    return rows


def row_named(rows: dict[str, Row], name: str) -> Row:
    if name not in rows:
        raise UserError(f"unknown row {name!r}; `reproduce --list` shows {', '.join(rows)}.")
    return rows[name]


def plan(rows: dict[str, Row], row: Row, runs: Path) -> list[PlannedRun]:
    """The runs `row` averages, each in `runs/<row id>/<name>`: one training run per seed
    and fold; for a zero-shot row, the trained row's runs first, then one evaluation of each
    of them per fold."""
    if row.zero_shot is None:
        return [
            PlannedRun(
                row.id,
                f"seed{seed}-fold{fold}",
                row.preset,
                {
                    **row.settings,
                    "split": fold,
                    "seed": seed,
                    "out": runs / row.id / f"seed{seed}-fold{fold}",
                },
            )
            for seed in row.seeds
            for fold in row.folds
        ]
    trained = plan(rows, rows[row.zero_shot["from"]], runs)
    evaluations = [
        PlannedRun(
            row.id,
            f"{run.name}-on-fold{fold}",
            source=run.settings["out"],
            evaluate={
                **row.zero_shot.get("settings", {}),
                "dataset": row.zero_shot["dataset"],
                "zero_shot": "full",
                "split": fold,
            },
        )
        for run in trained
        for fold in row.folds
    ]
    return trained + evaluations


def averaged(runs: list[PlannedRun], row: Row) -> list[PlannedRun]:
    """The runs whose numbers the row averages: its own (for a zero-shot row, its
    evaluations; the trained runs are the other row's)."""
    return [r for r in runs if r.row == row.id]


def gpu_hours(rows: dict[str, Row], row: Row) -> float:
    """The row's A100 hours: its own runs times the row's per-run estimate (a zero-shot
    row's trained models are the other row's, counted there)."""
    return len(averaged(plan(rows, row, Path()), row)) * row.gpu_hours_per_run


def _flags(settings: dict) -> str:
    """Settings as `run` flags: a true switch as its flag, a false one as its off flag."""
    fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    shown_flags = []
    for name, value in settings.items():
        if isinstance(value, bool) and name in fields:
            off = declared(fields[name]).off_flag or "--no-" + name.replace("_", "-")
            shown_flags.append(flag_name(name) if value else off)
        elif value is not None:
            flag = flag_name(name) if name in fields else "--" + name.replace("_", "-")
            shown_flags.append(f"{flag} {value}")
    return " ".join(shown_flags)


def command(run: PlannedRun) -> str:
    """The `python -m trainer` line that makes one planned run by hand."""
    if run.is_training:
        preset = f"--preset {run.preset} " if run.preset else ""
        return f"python -m trainer run {preset}{_flags(run.settings)} --resume"
    return f"python -m trainer eval --checkpoint {run.source} {_flags(run.evaluate)}"


def shown(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}"


def list_table(rows: dict[str, Row]) -> str:
    """`reproduce --list` (and docs/reproduce.md): every row, its command, the paper's
    number and the A100 hours its runs need."""
    lines = [
        "| row | table | what | paper | metric | runs | GPU hours (A100, est.) | command |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows.values():
        runs = len(averaged(plan(rows, row, Path()), row))
        lines.append(
            f"| {row.id} | {row.table} | {row.description} | {shown(row.paper) or 'n/t'} | "
            f"{row.metric} | {runs} | {gpu_hours(rows, row):.2f} | "
            f"`python -m trainer reproduce {row.id}` |"
        )
    return "\n".join(lines)


def zoo_line(row: Row, ours: dict | None = None) -> str:
    """The row's line in the model zoo's table (row, paper, ours, checkpoint): `ours` (a
    reproduction's) fills its cell; the checkpoint's stays for where an exported model
    (`python -m trainer export`) is published."""
    return f"| {row.id} | {shown(row.paper) or 'n/t'} | {interval_text(ours) if ours else ''} | |"


def zoo_table(rows: dict[str, Row]) -> str:
    """docs/reproduce.md's model zoo: every row, "ours" and "checkpoint" empty."""
    lines = ["| row | paper | ours | checkpoint |", "|---|---|---|---|"]
    return "\n".join(lines + [zoo_line(row) for row in rows.values()])


def interval_text(ours: dict) -> str:
    """'84.1 ± 0.6 (n = 3)' in percent; one run has no interval."""
    if ours["ci95"] is None:
        return f"{100 * ours['mean']:.1f} (n = 1)"
    return f"{100 * ours['mean']:.1f} ± {100 * ours['ci95']:.1f} (n = {ours['n']})"


# --- execution ---------------------------------------------------------------------------


def run_config(run: PlannedRun) -> RunConfig:
    return resolve_config(run.preset, run.settings)


def _json_settings(cfg: RunConfig) -> dict:
    """A RunConfig as config.json records it (paths as strings)."""
    return json_values(dataclasses.asdict(cfg))


def finished_metric(run_dir: Path, epochs: int, metric: str) -> float | None:
    """The run's number (its best evaluation's `metric`, best as `train` picks it: top-1,
    or mAP for mAP) when its metrics.jsonl holds the last epoch's evaluation; None for a
    run not finished."""
    evals = [line for line in read_metrics(run_dir) if "top1" in line]
    if not any(line["epoch"] == epochs for line in evals):
        return None
    key = "map" if metric == "map" else "top1"
    return max(evals, key=lambda line: line[key])[metric]


def _check_same_settings(cfg: RunConfig, run_dir: Path) -> None:
    """A finished run is reused only with the settings the row asks for."""
    saved = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    changed = setting_differences(saved, _json_settings(resolved_config(cfg)))
    if changed:
        names = ", ".join(f"{name} {old} -> {new}" for name, old, new in changed)
        raise UserError(
            f"{run_dir} holds a run with other settings ({names}); move it away or pass "
            "another --runs."
        )


def train_run(run: PlannedRun, metric: str, train, show_progress: bool) -> float:
    """A training run's number: read when finished, else trained (resuming what a killed
    reproduce left)."""
    cfg = run_config(run)
    done = finished_metric(cfg.out, cfg.epochs, metric)
    if done is not None:
        _check_same_settings(cfg, cfg.out)
        return done
    best = train(cfg, resume=True, show_progress=show_progress)
    return best[metric]


def evaluate_run(run: PlannedRun, runs: Path, metric: str, evaluate, show_progress: bool) -> float:
    """A zero-shot evaluation's number, kept in `runs/<row>/<name>.json` and read from there
    once written."""
    kept = runs / run.row / f"{run.name}.json"
    kept.parent.mkdir(parents=True, exist_ok=True)
    if kept.is_file():
        return json.loads(kept.read_text(encoding="utf-8"))[metric]
    result = evaluate(run.source, show_progress=show_progress, **run.evaluate)
    atomic_write_json(kept, result)
    return result[metric]


def execute(
    rows: dict[str, Row], row: Row, runs: Path, train, evaluate, show_progress: bool = True
) -> dict[str, float]:
    """Every planned run's number by name (`row/name`), in plan order."""
    numbers = {}
    for run in plan(rows, row, runs):
        metric = rows[run.row].metric
        numbers[f"{run.row}/{run.name}"] = (
            train_run(run, metric, train, show_progress)
            if run.is_training
            else evaluate_run(run, runs, metric, evaluate, show_progress)
        )
    return numbers


def run_environments(run_dirs: list[Path]) -> list[dict]:
    """The distinct (device name, world size) the runs trained on, from each run's
    environment.json (every start of it)."""
    seen = []
    for run_dir in run_dirs:
        path = run_dir / "environment.json"
        entries = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
        for entry in entries:
            hardware = {"device_name": entry["device_name"], "world_size": entry["world_size"]}
            if hardware not in seen:
                seen.append(hardware)
    return seen


def evaluation_hardware(evaluations: list[PlannedRun]) -> list[dict]:
    """The device this process evaluated on (a zero-shot row's evaluations: one process)."""
    from storyboard_common.device import resolve_device

    from .environment import device_name

    devices = {resolve_device(run.evaluate.get("device", "auto")) for run in evaluations}
    return [{"device_name": device_name(d), "world_size": 1} for d in sorted(devices, key=str)]


def training_seconds(run_dirs: list[Path]) -> float:
    """The epochs' training time summed over the runs (metrics.jsonl's `seconds`)."""
    return float(sum(line.get("seconds", 0.0) for d in run_dirs for line in read_metrics(d)))


def reproduction(
    rows: dict[str, Row], row: Row, runs: Path, numbers: dict[str, float], started: str
) -> dict:
    """reproduction.json: the paper's number, ours (mean, std, 95% half-width, n over the
    runs the row averages), each run's number, the settings, the hardware and the time."""
    planned = plan(rows, row, runs)
    own = averaged(planned, row)
    trained = [r.settings["out"] for r in planned if r.is_training]
    ours = spread([numbers[f"{r.row}/{r.name}"] for r in own])
    return {
        "row": row.id,
        "table": row.table,
        "description": row.description,
        "metric": row.metric,
        "paper": row.paper,
        "paper_note": row.paper_note,
        "ours": ours,
        "runs": {f"{r.row}/{r.name}": numbers[f"{r.row}/{r.name}"] for r in own},
        "settings": {
            f"{r.row}/{r.name}": (
                _json_settings(run_config(r))
                if r.is_training
                else {"source": str(r.source), **r.evaluate}
            )
            for r in planned
        },
        "hardware": run_environments(trained),
        "evaluated_on": evaluation_hardware([r for r in own if not r.is_training]),
        "training_seconds": training_seconds(trained),
        "zoo_line": zoo_line(row, ours),
        "started": started,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def reproduction_markdown(report: dict) -> str:
    """reproduction.md: what reproduction.json holds, for reading."""
    paper = shown(report["paper"]) or f"not available ({report['paper_note']})"

    def machines(entries: list[dict]) -> str:
        return "; ".join(f"{h['device_name']} x {h['world_size']}" for h in entries) or "none"

    lines = [
        f"# {report['row']}: {report['description']}",
        "",
        f"Table {report['table']}, {report['metric']} (%).",
        "",
        f"* paper: {paper}",
        f"* ours: {interval_text(report['ours'])}, mean ± 95% t-interval over the runs below",
        f"* trained on: {machines(report['hardware'])} (device x processes)",
        *(
            [f"* evaluated on: {machines(report['evaluated_on'])}"]
            if report["evaluated_on"]
            else []
        ),
        f"* training time: {report['training_seconds'] / 3600:.2f} h (summed over the runs)",
        f"* started {report['started']}, finished {report['finished']}",
        "",
        "| run | " + report["metric"] + " (%) |",
        "|---|---|",
        *(f"| {name} | {100 * value:.2f} |" for name, value in report["runs"].items()),
        "",
        "Each run's settings are in reproduction.json (`settings`) and its folder's config.json.",
        "",
        "The row's line for docs/reproduce.md (the checkpoint: where its exported model is):",
        "",
        report["zoo_line"],
    ]
    return "\n".join(lines) + "\n"


def reproduce(
    rows: dict[str, Row], row: Row, runs: Path, train, evaluate, show_progress: bool = True
) -> Path:
    """Run (or read) every run of `row` and write reproduction.json and reproduction.md in
    `runs/<row id>`; returns that folder."""
    runs = absolute(runs)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    numbers = execute(rows, row, runs, train, evaluate, show_progress)
    report = reproduction(rows, row, runs, numbers, started)
    out = runs / row.id
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "reproduction.json", report)
    atomic_write_text(out / "reproduction.md", reproduction_markdown(report))
    return out
