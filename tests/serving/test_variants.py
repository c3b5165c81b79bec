"""Each runtime variant's command line, health check and missing-runtime message."""

from __future__ import annotations

import sys

import pytest

from conveyor.serving.folder import ModelFolder, inspect_folder
from conveyor.serving.variants import VARIANTS, RuntimeMissing


@pytest.fixture
def hf_folder(tiny_model):
    return inspect_folder(tiny_model)


def build(name, folder, env=None, port=9001, served="trade-qa"):
    return VARIANTS[name].build(folder, port, served, env or {})


def test_vllm_options_from_the_environment(hf_folder):
    launch = build("vllm", hf_folder, {"BACKEND_MODEL_NAME": "from-env", "VLLM_QUANTIZATION": "awq",
                                       "VLLM_TP_SIZE": "2", "VLLM_PP_SIZE": "1",
                                       "VLLM_EXTRA_ARGS": "--max-model-len 4096 --enforce-eager"})
    assert launch.command == [
        "vllm", "serve", str(hf_folder.path), "--host", "127.0.0.1", "--port", "9001",
        "--served-model-name", "from-env", "--quantization", "awq", "--tensor-parallel-size", "2",
        "--pipeline-parallel-size", "1", "--max-model-len", "4096", "--enforce-eager"]
    assert launch.health.path == "/health"


def test_tgi_sglang_and_nim(hf_folder):
    assert build("tgi", hf_folder).command[:3] == ["text-generation-launcher", "--model-id",
                                                   str(hf_folder.path)]
    sglang = build("sglang", hf_folder)
    assert sglang.command[1:3] == ["-m", "sglang.launch_server"] and sglang.health.path == "/health"
    nim = build("nim", hf_folder, {"NIM_IMAGE": "nvcr.io/nim/x:1", "NGC_API_KEY": "k",
                                   "HF_HOME": "/cache"})
    assert nim.command[-1] == "nvcr.io/nim/x:1" and "/cache:/opt/nim/.cache" in nim.command
    assert nim.health.path == "/v1/health/ready" and nim.env == {"NGC_API_KEY": "k"}
    with pytest.raises(RuntimeMissing, match="NGC_API_KEY"):
        build("nim", hf_folder, {"NIM_IMAGE": "img"})


def test_llamacpp_reads_the_chat_format_from_the_gguf(tmp_path):
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(tmp_path / "m.gguf"), "gemma3")
    writer.add_tensor("t", np.zeros(4, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    launch = build("llamacpp", inspect_folder(tmp_path))
    assert launch.command[:3] == [sys.executable, "-m", "llama_cpp.server"]
    assert launch.command[-2:] == ["--chat_format", "gemma"]
    assert "--model_alias" in launch.command and launch.health.path == "/v1/models"
    forced = build("llamacpp", inspect_folder(tmp_path), {"LLAMACPP_CHAT_FORMAT": "chatml"})
    assert forced.command[-2:] == ["--chat_format", "chatml"]


def test_cmd_has_no_health_check(hf_folder):
    launch = build("cmd", hf_folder, {"CMD": "python -m http.server $PORT"})
    assert launch.command == "python -m http.server $PORT" and launch.health is None
    assert launch.env == {"PORT": "9001", "MODEL_PATH": str(hf_folder.path)}
    with pytest.raises(RuntimeMissing, match="--command"):
        build("cmd", hf_folder)


def test_custom_from_the_definition(tmp_path):
    (tmp_path / "model-definition.yaml").write_text(
        "models:\n- name: m\n  model_path: /models\n  service:\n"
        "    start_command: [serve, '{model_path}']\n    port: 8123\n"
        "    health_check: {path: /ping}\n")
    launch = build("custom", inspect_folder(tmp_path))
    assert launch.command == ["serve", str(tmp_path)] and launch.port == 8123
    assert launch.health.path == "/ping"


def test_a_missing_runtime_says_what_to_install():
    with pytest.raises(RuntimeMissing, match="the vllm runtime is not installed: pip install vllm"):
        VARIANTS["vllm"].check_installed()
    VARIANTS["cmd"].check_installed()


def test_builtin_runs_conveyors_own_server(hf_folder):
    launch = build("builtin", hf_folder, {"BUILTIN_EXTRA_ARGS": "--max-batch 16"})
    assert launch.command == [
        sys.executable, "-m", "conveyor.serving.builtin", "--model", str(hf_folder.path),
        "--host", "127.0.0.1", "--port", "9001", "--name", "trade-qa", "--device", "auto",
        "--max-batch", "16"]
    assert launch.health.path == "/health"


@pytest.mark.parametrize(("kind", "gpu", "vllm_installed", "expected"), [
    ("definition", 0, False, "custom"),
    ("gguf", 1, True, "llamacpp"),
    ("hf", 1, True, "vllm"),
    ("hf", 1, False, "builtin"),
    ("hf", 0, True, "builtin"),
])
def test_auto_picks_a_runtime_from_the_folder(tmp_path, monkeypatch, kind, gpu, vllm_installed,
                                              expected):
    from conveyor.serving import service

    monkeypatch.setattr(service.shutil, "which", lambda name: "/bin/vllm" if vllm_installed else None)
    folder = ModelFolder(tmp_path, kind)
    assert service.choose_runtime(folder, "auto", gpu) == expected
    assert service.choose_runtime(folder, "cmd", gpu) == "cmd"
