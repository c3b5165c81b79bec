"""Entry point: builds the typer app from the command groups and turns user errors into one line."""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console

from conveyor.cli import adapt, pipelines, schedules, server, serving
from conveyor.errors import ConveyorError, SpecError

app = typer.Typer(
    name="conveyor",
    help="Adapt language models to a domain and put them into service.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
pipelines.register(app)
adapt.register(app)
serving.register(app)
server.register(app)
schedules.register(app)

_errors = Console(stderr=True, highlight=False)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()  # exits by itself on success and on usage errors
    except SpecError as err:
        for problem in err.problems:
            _errors.print(problem, style="red", markup=False, soft_wrap=True)
        code = err.exit_code
    except ConveyorError as err:
        _errors.print(f"error: {err}", style="red", markup=False, soft_wrap=True)
        code = err.exit_code
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
