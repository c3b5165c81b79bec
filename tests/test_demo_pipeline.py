"""`make demo`'s pipeline, whole, on the real default model: `-m slow` (about 12 minutes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

PIPELINE = Path(__file__).parents[1] / "examples" / "domain-qa" / "pipeline.yaml"
MARGIN = 0.05  # the README states it: tuned SemScore at least this much above base


def test_the_domain_qa_pipeline_tunes_a_better_model_and_serves_it(cli, conveyor_home,
                                                                     monkeypatch):
    monkeypatch.setenv("CONVEYOR_CAPACITY", "cpu=2,mem=16g,gpu=0")  # the CI machine
    done = cli("run", PIPELINE, "--json", timeout=1800)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    run = json.loads(done.stdout)
    assert [t["status"] for t in run["tasks"]] == ["succeeded"] * 5

    metrics = json.loads((conveyor_home / "folders" / "reports" / "domain-qa" /
                          "metrics.json").read_text())
    base, tuned = (metrics["models"][m]["semscore"]["mean"] for m in ("base", "tuned"))
    assert tuned - base >= MARGIN, (base, tuned)
    assert metrics["models"]["tuned"]["truthfulness"]["status"] == "not run"

    asked = cli("logs", run["id"], "serve-check").stdout
    assert asked.count("\nA: ") + asked.startswith("A: ") == 3
    assert "SemScore" in cli("logs", run["id"], "summary").stdout
