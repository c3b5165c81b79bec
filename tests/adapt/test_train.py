"""`adapt train` on a tiny Gemma 3 built in the test: outputs, masking, resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict

from conveyor.adapt.config import load_recipe_config
from conveyor.adapt.train import LoraSettings, TrainConfig, TrainingSettings, train

SUMMARY_KEYS = {"steps", "final_loss", "eval_loss_before", "eval_loss_after", "wall_seconds",
                "tokens_per_second", "peak_memory_mb"}


def tiny_config(**training) -> TrainConfig:
    knobs = {"max_steps": 6, "batch_size": 4, "learning_rate": 5e-3, "save_steps": 3,
             "max_seq_length": 128, "eval_batch_size": 16, "warmup": 0, **training}
    return TrainConfig(lora=LoraSettings(r=8, alpha=16, dropout=0.0),
                       training=TrainingSettings(**knobs))


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_training_writes_adapter_merged_model_metrics_and_summary(
    tiny_model, sample_dataset, tmp_path, conveyor_home
):
    run = tmp_path / "run"
    summary = train(sample_dataset, run, tiny_config(max_steps=12), conveyor_home,
                    model_name=str(tiny_model))

    assert SUMMARY_KEYS <= set(summary)
    assert summary["steps"] == 12
    assert summary["eval_loss_after"] < summary["eval_loss_before"]
    assert summary["tokens_per_second"] > 0 and summary["peak_memory_mb"] > 0
    assert json.loads((run / "train_summary.json").read_text())["steps"] == 12
    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == list(range(1, 13))
    assert all(m["loss"] > 0 and m["learning_rate"] is not None and m["tokens_per_second"] > 0
               for m in metrics)
    assert (run / "adapter" / "adapter_config.json").exists()
    assert sorted(p.name for p in (run / "checkpoints").glob("checkpoint-*")) == [
        "checkpoint-12", "checkpoint-3", "checkpoint-6", "checkpoint-9"]

    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = AutoModelForCausalLM.from_pretrained(run / "merged")
    tokenizer = AutoTokenizer.from_pretrained(run / "merged")
    assert tokenizer.chat_template and "<start_of_turn>" in tokenizer.chat_template
    assert not any("lora" in name for name, _ in merged.named_parameters())


def test_loss_falls_on_the_answer_only(tiny_model, tmp_path, conveyor_home):
    """Random questions, one fixed answer: only a loss that skips the prompt can reach ~0."""
    import random

    rng = random.Random(0)
    syllables = "가나다라마바사아자차카타파하"
    rows = [{"question": "".join(rng.choice(syllables) for _ in range(40)), "answer": "네"}
            for _ in range(64)]
    data = tmp_path / "dataset"
    DatasetDict(train=Dataset.from_list(rows), test=Dataset.from_list(rows[:8])).save_to_disk(
        str(data))
    summary = train(data, tmp_path / "run",
                    tiny_config(max_steps=30, learning_rate=1e-2, batch_size=8),
                    conveyor_home, model_name=str(tiny_model))
    # 40 random syllables of 14 cost at least ln(14) = 2.6 nats each if they were in the loss
    assert summary["eval_loss_after"] < 1.0, "the random prompt tokens are not in the loss"


def test_resume_continues_the_same_loss_curve(tiny_model, sample_dataset, tmp_path,
                                              conveyor_home):
    from transformers import TrainerCallback

    class StopAfter(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 4:
                control.should_training_stop = True

    whole = tmp_path / "whole"
    train(sample_dataset, whole, tiny_config(), conveyor_home, model_name=str(tiny_model))
    broken = tmp_path / "broken"
    train(sample_dataset, broken, tiny_config(), conveyor_home, model_name=str(tiny_model),
          callbacks=[StopAfter()])
    assert (broken / "checkpoints" / "checkpoint-3").exists()
    resumed = train(sample_dataset, broken, tiny_config(), conveyor_home,
                    model_name=str(tiny_model), resume=True)
    assert resumed["steps"] == 6
    uninterrupted = {m["step"]: m["loss"] for m in read_metrics(whole)}
    continued = {m["step"]: m["loss"] for m in read_metrics(broken)}  # later lines win
    assert sorted(continued) == [1, 2, 3, 4, 5, 6]
    for step in range(1, 7):
        assert continued[step] == pytest.approx(uninterrupted[step], rel=1e-4), step
    before = json.loads((whole / "train_summary.json").read_text())["eval_loss_before"]
    assert resumed["eval_loss_before"] == pytest.approx(before)


def test_shipped_configs(tmp_path):
    assert load_recipe_config(TrainConfig, "train.yaml") == TrainConfig()
    gpu = load_recipe_config(TrainConfig, "train-gpu.yaml")
    assert (gpu.lora.r, gpu.lora.alpha, gpu.lora.dropout) == (256, 32, 0.05)
    assert (gpu.training.batch_size, gpu.training.gradient_accumulation, gpu.training.epochs,
            gpu.training.learning_rate, gpu.training.max_steps) == (2, 4, 3.0, 2e-4, -1)
    cpu = TrainConfig()
    assert cpu.training.max_steps == 50 and cpu.training.precision == "auto"
    assert cpu.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                       "up_proj", "down_proj"]


def assert_clean(result, *fragments, code=2):
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_bad_input_is_one_line_before_any_long_work(cli, tiny_model, sample_dataset, tmp_path):
    common = ["adapt", "train", "--out", tmp_path / "run", "--model", tiny_model]
    assert_clean(cli(*common, "--data", tmp_path / "nope"), "no such dataset")
    no_columns = tmp_path / "bad-columns"
    DatasetDict(train=Dataset.from_list([{"prompt": "x"}])).save_to_disk(str(no_columns))
    assert_clean(cli(*common, "--data", no_columns), "has no column(s) answer, question")
    not_model = tmp_path / "not-a-model"
    not_model.mkdir()
    assert_clean(cli("adapt", "train", "--data", sample_dataset, "--out", tmp_path / "r",
                     "--model", not_model), "not a model folder (no config.json)")
    assert_clean(cli(*common, "--data", sample_dataset, "--set", "training.max_stepz=3"),
                 "--set training.max_stepz=3: training.max_stepz: unknown key")
    assert_clean(cli(*common, "--data", sample_dataset, "--set", "training.max_seq_length=4096"),
                 "longer than the 512 positions")
    assert_clean(cli(*common, "--data", sample_dataset, "--resume"), "no checkpoint to resume")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_cli_trains_and_prints_the_summary(cli, tiny_model, sample_dataset, tmp_path):
    result = cli("adapt", "train", "--data", sample_dataset, "--out", tmp_path / "run",
                 "--model", tiny_model, "--set", "training.max_steps=2",
                 "--set", "training.save_steps=2", "--set", "lora.r=4", timeout=600)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["steps"] == 2 and SUMMARY_KEYS <= set(summary)
