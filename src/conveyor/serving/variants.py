"""Runtime variants as data: how each runtime is started on a port, and how its health is probed.

A variant turns a model folder, a port and a served name into a command line. Runtimes that
are not installed are named with what to install, before anything starts.
"""

from __future__ import annotations

import importlib.util
import shlex
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from conveyor.errors import ConveyorError
from conveyor.serving.folder import HealthCheck, ModelFolder

HOST = "127.0.0.1"  # replicas listen on loopback; only the gateway faces clients


class RuntimeMissing(ConveyorError):
    exit_code = 2


@dataclass(frozen=True)
class Launch:
    """What starting one replica takes."""

    command: list[str] | str  # a string runs through a shell (the user's own commands)
    port: int
    health: HealthCheck | None  # None: no check; the replica is RUNNING, never HEALTHY
    env: dict[str, str]


@dataclass(frozen=True)
class Variant:
    name: str
    requires: str | None  # an executable (`vllm`) or a module (`module:llama_cpp`) it needs
    install_hint: str
    build: Callable[[ModelFolder, int, str, Mapping[str, str]], Launch]

    def check_installed(self) -> None:
        if self.requires is None:
            return
        if self.requires.startswith("module:"):
            found = importlib.util.find_spec(self.requires.removeprefix("module:")) is not None
        else:
            found = shutil.which(self.requires) is not None
        if not found:
            raise RuntimeMissing(f"the {self.name} runtime is not installed: {self.install_hint}")


def _health(path: str) -> HealthCheck:
    return HealthCheck(path=path, interval=2.0, max_retries=3, max_wait_time=5.0)


def _builtin(folder: ModelFolder, port: int, name: str, env: Mapping[str, str]) -> Launch:
    command = [sys.executable, "-m", "conveyor.serving.builtin", "--model", str(folder.path),
               "--host", HOST, "--port", str(port), "--name", name, "--device", "auto"]
    command += shlex.split(env.get("BUILTIN_EXTRA_ARGS", ""))  # e.g. --max-batch 16
    return Launch(command, port, _health("/health"), {})


def _llamacpp(folder: ModelFolder, port: int, name: str, env: Mapping[str, str]) -> Launch:
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(folder.gguf_file),
               "--host", HOST, "--port", str(port), "--model_alias", name]
    chat_format = env.get("LLAMACPP_CHAT_FORMAT") or gguf_chat_format(folder)
    if chat_format:  # without it llama.cpp falls back to llama-2 turns and Gemma answers nothing
        command += ["--chat_format", chat_format]
    return Launch(command, port, _health("/v1/models"), {})


def gguf_chat_format(folder: ModelFolder) -> str | None:
    """llama-cpp-python's chat format for a GGUF file, from its architecture."""
    try:
        from gguf import GGUFReader

        field = GGUFReader(str(folder.gguf_file)).fields.get("general.architecture")
        architecture = bytes(field.parts[field.data[0]]).decode() if field else ""
    except Exception:  # not a readable GGUF: let llama.cpp say what is wrong when it starts
        return None
    return {"gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma", "llama": "llama-3",
            "qwen2": "chatml", "qwen3": "chatml", "mistral": "mistral-instruct"}.get(architecture)


def _vllm(folder: ModelFolder, port: int, name: str, env: Mapping[str, str]) -> Launch:
    command = ["vllm", "serve", str(folder.path), "--host", HOST, "--port", str(port),
               "--served-model-name", env.get("BACKEND_MODEL_NAME") or name]
    for variable, option in (("VLLM_QUANTIZATION", "--quantization"),
                             ("VLLM_TP_SIZE", "--tensor-parallel-size"),
                             ("VLLM_PP_SIZE", "--pipeline-parallel-size")):
        if env.get(variable):
            command += [option, env[variable]]
    command += shlex.split(env.get("VLLM_EXTRA_ARGS", ""))
    return Launch(command, port, _health("/health"), {})


def _tgi(folder: ModelFolder, port: int, name: str, env: Mapping[str, str]) -> Launch:
    command = ["text-generation-launcher", "--model-id", str(folder.path), "--hostname", HOST,
               "--port", str(port)] + shlex.split(env.get("TGI_EXTRA_ARGS", ""))
    return Launch(command, port, _health("/health"), {})


def _sglang(folder: ModelFolder, port: int, name: str, env: Mapping[str, str]) -> Launch:
    command = [sys.executable, "-m", "sglang.launch_server", "--model-path", str(folder.path),
               "--host", HOST, "--port", str(port), "--served-model-name", name]
    command += shlex.split(env.get("SGLANG_EXTRA_ARGS", ""))
    return Launch(command, port, _health("/health"), {})


def _nim(folder: ModelFolder, port: int, name: str, env: Mapping[str, str]) -> Launch:
    image = env.get("NIM_IMAGE")
    if not image:
        raise RuntimeMissing("the nim runtime needs NIM_IMAGE (e.g. nvcr.io/nim/meta/llama3-8b-instruct:latest)")
    if not env.get("NGC_API_KEY"):
        raise RuntimeMissing("the nim runtime needs NGC_API_KEY in the environment (--env NGC_API_KEY=...)")
    cache = env.get("HF_HOME") or str(folder.path / ".nim-cache")
    command = ["docker", "run", "--rm", "--gpus", "all", "-e", "NGC_API_KEY",
               "-v", f"{cache}:/opt/nim/.cache", "-p", f"{HOST}:{port}:8000", image]
    return Launch(command, port, _health("/v1/health/ready"), {"NGC_API_KEY": env["NGC_API_KEY"]})


def _cmd(folder: ModelFolder, port: int, name: str, env: Mapping[str, str]) -> Launch:
    command = env.get("CONVEYOR_COMMAND") or env.get("CMD")
    if not command:
        raise RuntimeMissing("the cmd runtime needs a command: --command \"...\" or CMD in the environment")
    return Launch(command, port, None, {"PORT": str(port), "MODEL_PATH": str(folder.path)})


def _custom(folder: ModelFolder, port: int, name: str, env: Mapping[str, str]) -> Launch:
    if folder.definition is None:
        raise RuntimeMissing(f"{folder.path}: the custom runtime needs a model-definition.yaml")
    model = folder.definition.models[0]
    model_path = str(folder.path) if model.model_path in ("/models", "") else model.model_path
    service = model.service
    return Launch(service.command(model_path), service.port, service.health_check, {})


VARIANTS: dict[str, Variant] = {
    v.name: v for v in (
        Variant("builtin", "module:transformers", "pip install 'conveyor-mlops[train]'"
                " (transformers and torch)", _builtin),
        Variant("llamacpp", "module:llama_cpp", "pip install 'llama-cpp-python[server]'"
                " (or the project's llamacpp extra; it compiles for several minutes)", _llamacpp),
        Variant("vllm", "vllm", "pip install vllm (needs a CUDA GPU)", _vllm),
        Variant("tgi", "text-generation-launcher", "install Hugging Face text-generation-inference", _tgi),
        Variant("sglang", "module:sglang", "pip install 'sglang[all]' (needs a CUDA GPU)", _sglang),
        Variant("nim", "docker", "NIM runs as a container: install Docker with the NVIDIA runtime", _nim),
        Variant("cmd", None, "", _cmd),
        Variant("custom", None, "", _custom),
    )
}
