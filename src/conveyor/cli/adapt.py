"""`conveyor adapt prepare`, `train` and `evaluate`: the domain-adaptation recipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from conveyor.errors import UsageError

console = Console(highlight=False)
notes = Console(stderr=True, highlight=False)

adapt_app = typer.Typer(help="The domain-adaptation recipe: prepare, train, evaluate.",
                        no_args_is_help=True)



def register(app: typer.Typer) -> None:
    app.add_typer(adapt_app, name="adapt")


@adapt_app.command()
def prepare(
    out: Annotated[Path, typer.Option(help="Folder for dataset/, qa.jsonl and report.json.")],
    exam: Annotated[Path | None, typer.Option(help="Folder of exam *.json files.")] = None,
    terms: Annotated[Path | None, typer.Option(help="Folder of glossary *.json files.")] = None,
    transcripts: Annotated[
        Path | None, typer.Option(help="Folder of transcripts: raw *.txt or extracted *.jsonl.")
    ] = None,
    test_size: Annotated[float | None, typer.Option(help="Share held out for test (0.1).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the train/test split (42).")] = None,
    config: Annotated[Path | None, typer.Option(help="A prepare.yaml; defaults are shipped.")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Override a config key: section.key=value.")] = [],
    llm_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1.")] = None,
    llm_model: Annotated[str | None, typer.Option(help="Model name at that endpoint.")] = None,
    llm_key_env: Annotated[str | None, typer.Option(help="Variable holding its API key.")] = None,
) -> None:
    """Turn exam questions, glossary terms and transcripts into a train/test Q/A dataset."""
    from conveyor.adapt.config import load_recipe_config
    from conveyor.adapt.prepare import NothingUsable, PrepareConfig
    from conveyor.adapt.prepare import prepare as run_prepare

    assignments = _with_options(set_, {"test_size": test_size, "seed": seed, "llm.url": llm_url,
                                       "llm.model": llm_model, "llm.key_env": llm_key_env})
    settings = load_recipe_config(PrepareConfig, "prepare.yaml", config, assignments)
    with Progress(TextColumn("extracting Q/A from transcripts"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=notes,
                  transient=True) as bar:
        task = bar.add_task("extract", total=None)

        def progress(total: int | None = None, advance: int = 0) -> None:
            if total is not None:
                bar.update(task, total=total)
            bar.advance(task, advance)

        try:
            result = run_prepare(out, settings, exam, terms, transcripts, progress)
        except NothingUsable as err:
            _print_problems(err.problems)
            raise
    _print_problems(result.problems)
    console.print(_summary(result.report))
    for label, name in (("dataset", "dataset"), ("pairs", "qa.jsonl"), ("report", "report.json")):
        console.print(f"{label:>8}: {out / name}", markup=False, soft_wrap=True)


@adapt_app.command()
def train(
    data: Annotated[Path, typer.Option(help="The dataset folder that `adapt prepare` wrote.")],
    out: Annotated[Path, typer.Option(help="Run folder: adapter/, merged/, metrics, summary.")],
    model: Annotated[str | None, typer.Option(help="A Hugging Face model folder; default: Gemma 3 270M.")] = None,
    config: Annotated[Path | None, typer.Option(help="A train.yaml; defaults are shipped.")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Override a config key: training.max_steps=30.")] = [],
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint in OUT.")] = False,
) -> None:
    """LoRA fine-tuning on the prepared Q/A dataset (loss on the answers only)."""
    from conveyor.adapt.config import load_recipe_config
    from conveyor.adapt.train import TrainConfig, visible_gpus
    from conveyor.adapt.train import train as run_train
    from conveyor.adapt.train_progress import ProgressBar
    from conveyor.settings import load_settings

    settings = load_recipe_config(TrainConfig, "train.yaml", config, set_)
    _offline()
    gpus = visible_gpus()
    if gpus > 1 and "LOCAL_RANK" not in os.environ:
        _relaunch_on_every_gpu(gpus)
    summary = run_train(data, out, settings, load_settings().home, model_name=model,
                        resume=resume, callbacks=[ProgressBar(notes)])
    if summary:
        console.print_json(json.dumps({k: v for k, v in summary.items() if k != "config"}))


@adapt_app.command()
def evaluate(
    data: Annotated[Path, typer.Option(help="The dataset folder that `adapt prepare` wrote.")],
    model: Annotated[list[str], typer.Option(help="NAME=SOURCE: a model folder, `default`, or http://host:port/v1#model (repeatable).")],
    out: Annotated[Path, typer.Option(help="Folder for answers/, metrics.json, plots, report.html.")],
    split: Annotated[str | None, typer.Option(help="Split to ask (test).")] = None,
    limit: Annotated[int | None, typer.Option(help="Ask only the first N questions.")] = None,
    config: Annotated[Path | None, typer.Option(help="An eval.yaml; defaults are shipped.")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Override a config key: judge.concurrency=8.")] = [],
    judge_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint of the judge.")] = None,
    judge_model: Annotated[str | None, typer.Option(help="The judge's model name.")] = None,
    judge_key_env: Annotated[str | None, typer.Option(help="Variable holding the judge's API key.")] = None,
) -> None:
    """Answer the held-out questions with each model; SemScore and judged truthfulness; report."""
    from conveyor.adapt.config import load_recipe_config
    from conveyor.adapt.evaluate import EvalConfig
    from conveyor.adapt.evaluate import evaluate as run_evaluate
    from conveyor.settings import load_settings

    assignments = _with_options(set_, {"split": split, "limit": limit, "judge.url": judge_url,
                                       "judge.model": judge_model, "judge.key_env": judge_key_env})
    settings = load_recipe_config(EvalConfig, "eval.yaml", config, assignments)
    _offline()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=notes, transient=True) as bar:
        tasks: dict[str, object] = {}

        def progress(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total)
            bar.update(tasks[what], completed=done)

        metrics = run_evaluate(data, model, out, settings, load_settings().home, progress)
    console.print(_eval_summary(metrics))
    for label, name in (("metrics", "metrics.json"), ("report", "report.html")):
        console.print(f"{label:>8}: {out / name}", markup=False, soft_wrap=True)


@adapt_app.command()
def results(
    out: Annotated[Path, typer.Argument(help="The folder `adapt evaluate --out` wrote.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the headline figures as JSON.")]
    = False,
) -> None:
    """Show the headline figures of a finished evaluation: SemScore and truthfulness per model."""
    file = out / "metrics.json"
    try:
        metrics = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{file}: no such file; give the --out folder of `conveyor adapt"
                         " evaluate`") from None
    except (OSError, ValueError) as err:
        raise UsageError(f"{file}: cannot be read: {err}") from None
    if as_json:
        console.print_json(json.dumps({"n": metrics["n"], "split": metrics["split"],
                                       "models": metrics["models"]}, ensure_ascii=False))
        return
    console.print(_eval_summary(metrics))
    for label, name in (("metrics", "metrics.json"), ("report", "report.html")):
        console.print(f"{label:>8}: {(out / name).resolve()}", markup=False, soft_wrap=True)


def _eval_summary(metrics: dict) -> Table:
    table = Table(title=f"{metrics['n']} {metrics['split']} questions", title_justify="left")
    for column in ("model", "SemScore mean", "median", "std", "truthfulness"):
        table.add_column(column)
    for name, entry in metrics["models"].items():
        sem, truth = entry["semscore"], entry["truthfulness"]
        judged = (f"{truth['mean']} (1-2: {truth['low']}, 4-5: {truth['high']},"
                  f" missing {truth['missing']})" if "counts" in truth
                  else f"{truth['status']}: {truth['reason']}")
        table.add_row(name, f"{sem['mean']:.3f}", f"{sem['median']:.3f}", f"{sem['std']:.3f}",
                      judged)
    return table


def _with_options(assignments: list[str], options: dict[str, object]) -> list[str]:
    """`--set` assignments followed by the dedicated options that were given (those win)."""
    return [*assignments, *(f"{key}={value}" for key, value in options.items()
                            if value is not None)]


def _offline() -> None:
    """Models and data come from local folders: never let a library wait on the network."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(name, "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def _relaunch_on_every_gpu(gpus: int) -> None:
    """One process per visible GPU (data parallel) through accelerate, with the same arguments."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(gpus),
               "-m", "conveyor", *sys.argv[1:]]
    notes.print(f"{gpus} GPUs visible: training on all of them with accelerate", markup=False)
    raise typer.Exit(subprocess.call(command))


def _print_problems(problems: list[str]) -> None:
    for problem in problems:
        notes.print(problem, style="yellow", markup=False, soft_wrap=True)


def _summary(report: dict) -> Table:
    table = Table(title=f"{report['total']} pairs · train {report['splits']['train']}"
                        f" · test {report['splits']['test']}", title_justify="left")
    for column in ("source", "files", "pairs", "kept", "skipped", "failed", "empty", "duplicates"):
        table.add_column(column, justify="left" if column == "source" else "right")
    for name, tally in report["sources"].items():
        table.add_row(name, *(str(tally[c]) for c in
                              ("files", "pairs", "kept", "skipped", "failed", "empty", "duplicates")))
    return table
