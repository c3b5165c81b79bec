"""What is in a model folder: a Hugging Face model, a GGUF file, or a model-definition.yaml.

No definition file is needed to serve a folder; when one is there (Backend.AI's schema),
it says how to start the server and how to check its health.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from conveyor.errors import ConveyorError, SpecError
from conveyor.yaml_models import load_document, validate

DEFINITION_FILE = "model-definition.yaml"


class ModelFolderError(ConveyorError):
    exit_code = 2


class HealthCheck(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = "/health"
    interval: float = Field(default=10.0, gt=0)  # seconds between probes
    max_retries: int = Field(default=10, ge=1)  # failed probes in a row before UNHEALTHY
    max_wait_time: float = Field(default=15.0, gt=0)  # seconds one probe may take
    expected_status_code: int = 200
    initial_delay: float = Field(default=0.0, ge=0)  # seconds before the first probe


class PreStartAction(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    action: str
    args: dict[str, Any] = Field(default_factory=dict)


class ServiceDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    pre_start_actions: list[PreStartAction] = Field(default_factory=list)
    start_command: str | list[str]
    port: int = Field(ge=1, le=65535)
    health_check: HealthCheck | None = None

    def command(self, model_path: str) -> list[str] | str:
        """The start command with `{model_path}` filled in; a string runs through a shell."""
        if isinstance(self.start_command, str):
            return self.start_command.replace("{model_path}", model_path)
        return [part.replace("{model_path}", model_path) for part in self.start_command]


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    model_path: str
    service: ServiceDefinition
    metadata: dict[str, Any] | None = None  # author, title, version, ... : kept, not used


class ModelDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    models: list[ModelEntry] = Field(min_length=1)


@dataclass(frozen=True)
class ModelFolder:
    path: Path
    kind: Literal["hf", "gguf", "definition", "other"]  # other: served by the user's command
    gguf_file: Path | None = None
    definition: ModelDefinition | None = None

    @property
    def has_chat_template(self) -> bool:
        return (self.path / "chat_template.jinja").exists() or '"chat_template"' in _read(
            self.path / "tokenizer_config.json")


def inspect_folder(path: Path) -> ModelFolder:
    """Classify a folder; a definition file wins, then a GGUF file, then HF config + weights."""
    path = Path(path)
    if not path.is_dir():
        raise ModelFolderError(f"{path}: no such folder; give the folder of a model to serve")
    definition = path / DEFINITION_FILE
    if definition.is_file():
        return ModelFolder(path, "definition", definition=load_definition(definition))
    ggufs = sorted(path.glob("*.gguf"))
    if ggufs:
        return ModelFolder(path, "gguf", gguf_file=ggufs[0])
    has_weights = any(path.glob("*.safetensors")) or any(path.glob("*.bin"))
    if (path / "config.json").is_file() and has_weights:
        return ModelFolder(path, "hf")
    raise ModelFolderError(
        f"{path}: not a model folder: no {DEFINITION_FILE}, no *.gguf, and no config.json with"
        " *.safetensors weights; point at the folder that save_pretrained or a download wrote"
    )


def load_definition(file: Path) -> ModelDefinition:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError([f"{file}: cannot be read: {err}"]) from None
    return validate(ModelDefinition, load_document(text, str(file)), str(file))


def _read(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""
