"""Training throughput: `conveyor adapt train` against a plain TRL SFTTrainer script.

    .venv/bin/python benchmarks/train_throughput.py [--model DIR] [--steps 10]

Both train the same base model (default: the packaged Gemma 3 270M) on the same
prepared sample data with the same LoRA settings, batch size and sequence length,
in this one process, one after the other. Throughput is training tokens per
second of training time (TRL's own token count over the Trainer's train_runtime),
so model loading, evaluation and saving are left out of both. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "domain-qa" / "data"


def prepare_sample(folder: Path) -> Path:
    from conveyor.adapt.prepare import PrepareConfig, prepare

    prepare(folder, PrepareConfig(), SAMPLE / "exam", SAMPLE / "terms", SAMPLE / "transcripts")
    return folder / "dataset"


def conveyor_run(data: Path, model: str | None, steps: int, folder: Path) -> float:
    from conveyor.adapt.train import TrainConfig, TrainingSettings, train

    config = TrainConfig(training=TrainingSettings(max_steps=steps, save_steps=10_000))
    summary = train(data, folder, config, Path(os.environ["CONVEYOR_HOME"]), model_name=model)
    last = json.loads((folder / "metrics.jsonl").read_text().splitlines()[-1])
    return last["num_tokens"] / summary["train_seconds"]


def plain_trl_run(data: Path, model_dir: Path, steps: int, folder: Path) -> float:
    """What a user would write with TRL alone: conversational prompt/completion rows."""
    import torch
    from datasets import load_from_disk
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from conveyor.adapt.formatting import DEFAULT_INSTRUCTION
    from conveyor.adapt.train import LoraSettings, TrainingSettings

    lora, settings = LoraSettings(), TrainingSettings()
    rows = load_from_disk(str(data))["train"].map(
        lambda row: {
            "prompt": [{"role": "user", "content": f"{DEFAULT_INSTRUCTION}\n{row['question']}"}],
            "completion": [{"role": "assistant", "content": row["answer"]}],
        },
        remove_columns=["context", "question", "answer", "source"],
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                 attn_implementation="eager")
    trainer = SFTTrainer(
        model=model, processing_class=tokenizer, train_dataset=rows,
        peft_config=LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                               target_modules=lora.target_modules, task_type="CAUSAL_LM"),
        args=SFTConfig(output_dir=str(folder), max_steps=steps,
                       per_device_train_batch_size=settings.batch_size,
                       learning_rate=settings.learning_rate, max_length=settings.max_seq_length,
                       seed=settings.seed, bf16=False, report_to="none", save_strategy="no",
                       logging_steps=1, disable_tqdm=True),
    )
    result = trainer.train()
    tokens = max(entry.get("num_tokens", 0) for entry in trainer.state.log_history)
    return tokens / result.metrics["train_runtime"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a Hugging Face model folder (default: Gemma 3 270M)")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    os.environ.setdefault("CONVEYOR_HOME", str(Path.home() / ".conveyor"))
    from conveyor.adapt.models import resolve_model

    model_dir = resolve_model(args.model, Path(os.environ["CONVEYOR_HOME"]))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = prepare_sample(tmp / "prepared")
        baseline = plain_trl_run(data, model_dir, args.steps, tmp / "trl")
        ours = conveyor_run(data, str(model_dir), args.steps, tmp / "conveyor")
    print(f"model {model_dir.name}, {args.steps} steps, batch 2, LoRA r=16 on all projections")
    print(f"plain TRL SFTTrainer : {baseline:8.1f} training tokens/s")
    print(f"conveyor adapt train : {ours:8.1f} training tokens/s")
    print(f"ratio (conveyor / TRL): {ours / baseline:.2f}")


if __name__ == "__main__":
    main()
