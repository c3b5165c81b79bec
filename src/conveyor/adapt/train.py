"""Recipe step 2: LoRA supervised fine-tuning of a causal LM on the prepared Q/A dataset.

    conveyor adapt train --data OUT/dataset --out RUN_DIR [--model DIR] [--config train.yaml]

setup (check inputs, load model and data) -> eval loss before -> train (TRL SFTTrainer,
loss on the answer tokens only) -> eval loss after -> save adapter, merged model, summary.
Everything a user can get wrong is checked in `setup`, before any long work starts.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from conveyor.adapt.formatting import ChatFormat, render_example
from conveyor.adapt.models import ModelError, resolve_model
from conveyor.adapt.prepare import load_prepared
from conveyor.errors import ConveyorError

log = logging.getLogger(__name__)

ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    r: int = Field(default=16, ge=1)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: list(ALL_PROJECTIONS))


class TrainingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: float = Field(default=1.0, gt=0)
    max_steps: int = 50  # > 0 overrides epochs
    batch_size: int = Field(default=2, ge=1)
    gradient_accumulation: int = Field(default=1, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    warmup: float = Field(default=0.05, ge=0)  # a share of the steps when < 1, else a step count
    max_seq_length: int = Field(default=256, ge=8)
    seed: int = 42
    save_steps: int = Field(default=25, ge=1)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on a GPU that has it
    gradient_checkpointing: bool = False
    eval_batch_size: int = Field(default=8, ge=1)
    logging_steps: int = Field(default=1, ge=1)
    report_to: Literal["none", "tensorboard", "mlflow"] = "none"


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    lora: LoraSettings = Field(default_factory=LoraSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    format: ChatFormat = Field(default_factory=ChatFormat)


class TrainInputError(ConveyorError):
    exit_code = 2


@dataclass
class Setup:
    model_dir: Path
    model: object
    tokenizer: object
    train_rows: object  # datasets.Dataset with prompt/completion
    eval_rows: object | None


def setup(data: Path, model_name: str | None, config: TrainConfig, home: Path) -> Setup:
    """Check every input, then load the model and format the data; raises before long work."""
    dataset = load_prepared(data, "train")
    if "train" not in dataset or len(dataset["train"]) == 0:
        raise TrainInputError(f"{data}: no `train` split with rows to learn from")
    _check_reporting(config.training.report_to)
    model_dir = resolve_model(model_name, home)

    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        model_config = AutoConfig.from_pretrained(model_dir)
    except (OSError, ValueError) as err:
        raise ModelError(f"{model_dir}: not a model transformers can load: {err}") from None
    limit = getattr(model_config.get_text_config(), "max_position_embeddings", None)
    if limit and config.training.max_seq_length > limit:
        raise TrainInputError(
            f"training.max_seq_length={config.training.max_seq_length} is longer than the"
            f" {limit} positions {model_dir.name} supports; lower it"
        )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=_dtype(config.training.precision),
        attn_implementation="eager" if model_config.model_type.startswith("gemma") else None,
    )
    train_rows = _as_prompt_completion(dataset["train"], tokenizer, config.format)
    test = dataset["test"] if "test" in dataset and len(dataset["test"]) else None
    eval_rows = _as_prompt_completion(test, tokenizer, config.format) if test else None
    return Setup(model_dir, model, tokenizer, train_rows, eval_rows)


def train(
    data: Path,
    out: Path,
    config: TrainConfig,
    home: Path,
    model_name: str | None = None,
    resume: bool = False,
    callbacks: list | None = None,
) -> dict:
    """Run the whole step; returns what train_summary.json holds."""
    started = time.monotonic()
    checkpoints = out / "checkpoints"
    if resume and not _last_checkpoint(checkpoints):
        raise TrainInputError(f"{checkpoints}: no checkpoint to resume from; run without --resume")
    ready = setup(data, model_name, config, home)
    out.mkdir(parents=True, exist_ok=True)

    from peft import LoraConfig
    from transformers import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    from conveyor.adapt.train_progress import MetricsLog

    settings = config.training
    metrics = MetricsLog(out / "metrics.jsonl", append=resume)
    trainer = SFTTrainer(
        model=ready.model,
        processing_class=ready.tokenizer,
        train_dataset=ready.train_rows,
        eval_dataset=ready.eval_rows,
        peft_config=LoraConfig(
            r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
            target_modules=config.lora.target_modules, task_type="CAUSAL_LM",
        ),
        args=SFTConfig(
            output_dir=str(checkpoints),
            num_train_epochs=settings.epochs,
            max_steps=settings.max_steps,
            per_device_train_batch_size=settings.batch_size,
            per_device_eval_batch_size=settings.eval_batch_size,
            gradient_accumulation_steps=settings.gradient_accumulation,
            learning_rate=settings.learning_rate,
            warmup_steps=settings.warmup,
            max_length=settings.max_seq_length,
            seed=settings.seed,
            data_seed=settings.seed,
            save_steps=settings.save_steps,
            save_strategy="steps",
            logging_steps=settings.logging_steps,
            bf16=_dtype_name(settings.precision) == "bf16",
            fp16=_dtype_name(settings.precision) == "fp16",
            activation_checkpointing=settings.gradient_checkpointing,
            dataloader_pin_memory=_dtype_name("auto") != "fp32",
            report_to=settings.report_to,
            disable_tqdm=True,
            completion_only_loss=True,
            packing=False,
            dataset_num_proc=None,
        ),
        callbacks=[metrics, *(callbacks or [])],
    )
    trainer.remove_callback(PrinterCallback)  # metrics.jsonl and the progress bar report instead
    before = _eval_loss_before(trainer, out / "eval_before.json", resume)
    result = trainer.train(resume_from_checkpoint=True if resume else None)
    after = trainer.evaluate()["eval_loss"] if ready.eval_rows is not None else None
    if not trainer.is_world_process_zero():
        return {}
    _save(trainer, ready, out)
    summary = {
        "model": str(ready.model_dir),
        "steps": trainer.state.global_step,
        "final_loss": metrics.last_loss,
        "train_loss_mean": result.training_loss,
        "eval_loss_before": before,
        "eval_loss_after": after,
        "wall_seconds": round(time.monotonic() - started, 2),
        "train_seconds": round(result.metrics.get("train_runtime", 0.0), 2),
        "tokens_per_second": metrics.tokens_per_second(),
        "peak_memory_mb": _peak_memory_mb(),
        "train_rows": len(ready.train_rows),
        "eval_rows": len(ready.eval_rows) if ready.eval_rows is not None else 0,
        "config": config.model_dump(),
    }
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    return summary


def _as_prompt_completion(split, tokenizer, fmt: ChatFormat):
    def render(row: dict) -> dict:
        prompt, completion = render_example(tokenizer, row["question"], row["answer"], fmt)
        return {"prompt": prompt, "completion": completion}

    return split.map(render, remove_columns=split.column_names)


def _check_reporting(report_to: str) -> None:
    module = {"tensorboard": "tensorboard", "mlflow": "mlflow"}.get(report_to)
    if module:
        import importlib.util

        if importlib.util.find_spec(module) is None:
            raise TrainInputError(f"training.report_to={report_to} but {module} is not installed;"
                                  f" pip install {module}, or set training.report_to=none")


def _dtype_name(precision: str) -> str:
    if precision != "auto":
        return precision
    import torch

    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


def _dtype(precision: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[
        _dtype_name(precision)]


def _eval_loss_before(trainer, record: Path, resume: bool) -> float | None:
    """Loss on the test split before any training (the LoRA update starts at zero);
    a resumed run keeps the figure its first start measured."""
    if resume and record.exists():
        return json.loads(record.read_text())["eval_loss"]
    if trainer.eval_dataset is None:
        return None
    loss = trainer.evaluate()["eval_loss"]
    record.write_text(json.dumps({"eval_loss": loss}))
    return loss


def _save(trainer, ready: Setup, out: Path) -> None:
    """RUN_DIR/adapter (PEFT) and RUN_DIR/merged (a plain model with its tokenizer)."""
    trainer.model.save_pretrained(out / "adapter")
    ready.tokenizer.save_pretrained(out / "adapter")
    merged = trainer.model.merge_and_unload()
    merged.save_pretrained(out / "merged")
    ready.tokenizer.save_pretrained(out / "merged")


def _last_checkpoint(folder: Path) -> Path | None:
    found = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return found[-1] if found else None


def _peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def visible_gpus() -> int:
    """GPUs this process may use; the pipeline engine narrows them with CUDA_VISIBLE_DEVICES."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return 0
    import torch

    return torch.cuda.device_count()
