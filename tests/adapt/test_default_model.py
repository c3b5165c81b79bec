"""The real default model (Gemma 3 270M from its PyPI package) on the sample data: `-m slow`."""

from __future__ import annotations

import json

import pytest

from conveyor.adapt.formatting import render_prompt
from conveyor.adapt.train import TrainConfig, train

pytestmark = pytest.mark.slow


def test_cpu_demo_training_lowers_held_out_loss_and_speaks_the_domain(
    sample_dataset, tmp_path, conveyor_home
):
    summary = train(sample_dataset, tmp_path / "run", TrainConfig(), conveyor_home)
    assert summary["steps"] == 50
    assert summary["eval_loss_after"] < 0.75 * summary["eval_loss_before"]

    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = tmp_path / "run" / "merged"
    tokenizer = AutoTokenizer.from_pretrained(merged)
    model = AutoModelForCausalLM.from_pretrained(merged)
    row = next(r for r in load_from_disk(str(sample_dataset))["train"]
               if r["question"].startswith("다음 설명에 해당하는 용어는"))
    inputs = tokenizer(render_prompt(tokenizer, row["question"]), return_tensors="pt",
                       add_special_tokens=False)
    output = model.generate(**inputs, max_new_tokens=40, do_sample=False)
    answer = tokenizer.decode(output[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    # it answers the way the glossary pairs taught it: a term, then its English name in brackets
    assert "(" in answer and ")" in answer, answer
    assert len(answer) < 120, "it learned to stop"
    summary_file = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary_file["eval_loss_after"] == summary["eval_loss_after"]
