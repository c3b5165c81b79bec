"""Model folder detection and Backend.AI's model-definition.yaml."""

from __future__ import annotations

import textwrap

import pytest

from conveyor.errors import SpecError
from conveyor.serving.folder import ModelFolderError, inspect_folder

DEFINITION = """
models:
  - name: trade-qa
    model_path: /models
    metadata: {author: conveyor, version: 1}
    service:
      pre_start_actions:
        - action: run_command
          args: {command: ["pip", "install", "vllm"]}
      start_command: [vllm, serve, "{model_path}", --port, "8000"]
      port: 8000
      health_check:
        path: /v1/models
        interval: 5
        max_retries: 3
        max_wait_time: 2
        expected_status_code: 200
        initial_delay: 30
"""


def write(folder, name, text=""):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(textwrap.dedent(text), encoding="utf-8")


def test_hf_folder_and_chat_template(tiny_model):
    folder = inspect_folder(tiny_model)
    assert folder.kind == "hf" and folder.has_chat_template


def test_gguf_folder(tmp_path):
    write(tmp_path, "model-q4.gguf", "GGUF")
    found = inspect_folder(tmp_path)
    assert found.kind == "gguf" and found.gguf_file == tmp_path / "model-q4.gguf"


def test_definition_wins_and_is_read(tmp_path):
    write(tmp_path, "model-q4.gguf", "GGUF")
    write(tmp_path, "model-definition.yaml", DEFINITION)
    found = inspect_folder(tmp_path)
    assert found.kind == "definition"
    model = found.definition.models[0]
    assert model.name == "trade-qa" and model.service.port == 8000
    assert model.service.command("/models/m") == ["vllm", "serve", "/models/m", "--port", "8000"]
    check = model.service.health_check
    assert (check.path, check.interval, check.max_retries, check.max_wait_time,
            check.expected_status_code, check.initial_delay) == ("/v1/models", 5, 3, 2, 200, 30)
    assert model.service.pre_start_actions[0].args == {"command": ["pip", "install", "vllm"]}


def test_bad_definition_names_file_line_and_field(tmp_path):
    write(tmp_path, "model-definition.yaml", DEFINITION.replace("port: 8000", "port: eighty"))
    with pytest.raises(SpecError) as caught:
        inspect_folder(tmp_path)
    [problem] = caught.value.problems
    assert problem.startswith(f"{tmp_path / 'model-definition.yaml'}:11: models[trade-qa].service.port:")


def test_not_a_model_folder(tmp_path):
    with pytest.raises(ModelFolderError, match="no such folder"):
        inspect_folder(tmp_path / "missing")
    write(tmp_path, "config.json", "{}")
    with pytest.raises(ModelFolderError, match="not a model folder"):
        inspect_folder(tmp_path)
