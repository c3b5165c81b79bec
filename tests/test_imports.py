"""Importing Conveyor and starting its CLI must not import the heavy ML libraries."""

from __future__ import annotations

import subprocess
import sys


def test_cli_and_engine_import_no_ml_libraries():
    code = (
        "import sys, conveyor, conveyor.cli.main, conveyor.pipelines.scheduler;"
        "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'httpx', 'jwt',"
        " 'httptools', 'prometheus_client', 'uvloop', 'ray', 'fastapi')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
