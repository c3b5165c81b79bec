"""Trainer callbacks: the metrics log every run writes, and the progress bar the CLI shows."""

from __future__ import annotations

import json
import time
from pathlib import Path

from transformers import TrainerCallback


class MetricsLog(TrainerCallback):
    """RUN_DIR/metrics.jsonl: one line per logged step with loss, learning rate and tokens/s."""

    def __init__(self, path: Path, append: bool = False):
        self.path = path
        self.last_loss: float | None = None
        self._mode = "a" if append else "w"
        self._started = self._last_time = 0.0
        self._last_tokens = 0.0  # TRL counts training tokens from this trainer's start

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.open(self._mode).close()
        self._started = self._last_time = time.monotonic()

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" not in logs or not state.is_world_process_zero:
            return
        now = time.monotonic()
        tokens = float(logs.get("num_tokens", 0.0))
        rate = (tokens - self._last_tokens) / max(now - self._last_time, 1e-9)
        self._last_tokens, self._last_time = tokens, now
        self.last_loss = float(logs["loss"])
        row = {
            "step": state.global_step,
            "loss": self.last_loss,
            "learning_rate": logs.get("learning_rate"),
            "tokens_per_second": round(rate, 1),
            "num_tokens": tokens,
            "epoch": logs.get("epoch"),
            "grad_norm": logs.get("grad_norm"),
        }
        with self.path.open("a") as file:
            file.write(json.dumps(row) + "\n")

    def tokens_per_second(self) -> float:
        return round(self._last_tokens / max(self._last_time - self._started, 1e-9), 1)


class ProgressBar(TrainerCallback):
    """A rich progress bar with the latest loss and the time left."""

    def __init__(self, console):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("training"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(),
            TextColumn("eta"), TimeRemainingColumn(), console=console,
        )
        self._task = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._progress.start()
            self._task = self._progress.add_task("train", total=state.max_steps,
                                                 completed=state.global_step, loss="–")

    def on_step_end(self, args, state, control, **kwargs):
        if self._task is not None:
            self._progress.update(self._task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self._task is not None and logs and "loss" in logs:
            self._progress.update(self._task, loss=f"{logs['loss']:.3f}")

    def on_train_end(self, args, state, control, **kwargs):
        if self._task is not None:
            self._progress.stop()
