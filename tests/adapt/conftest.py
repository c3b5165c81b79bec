"""A real OpenAI-compatible HTTP server on loopback, scripted by each test."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

SAMPLE_DATA = Path(__file__).resolve().parents[2] / "examples" / "domain-qa" / "data"


@dataclass
class FakeLLM:
    """Answers chat completions with `reply(user_text) -> str | (status, body)`."""

    reply: Callable[[str], object] = lambda text: '{"qa_pairs": []}'
    models: list[str] = field(default_factory=lambda: ["fake-model"])
    requests: list[dict] = field(default_factory=list)
    headers: list[dict] = field(default_factory=list)
    url: str = ""

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        def models() -> dict:
            return {"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            self.requests.append(body)
            self.headers.append(dict(request.headers))
            answer = self.reply(body["messages"][-1]["content"])
            if isinstance(answer, tuple):
                status, payload = answer
                return JSONResponse(payload, status_code=status)
            return {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": answer}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }

        return app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def fake_llm():
    llm = FakeLLM()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(llm.app(), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the fake LLM server did not start"
        time.sleep(0.02)
    llm.url = f"http://127.0.0.1:{port}/v1"
    yield llm
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def dead_llm_url() -> str:
    """An address on loopback where nothing listens."""
    return f"http://127.0.0.1:{free_port()}/v1"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A Gemma 3 causal LM with hidden size 64 and 2 layers, and a BPE tokenizer trained on the
    sample data: the same code paths as the real model, in seconds."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

    from conveyor.adapt.models import GEMMA_CHAT_TEMPLATE

    folder = tmp_path_factory.mktemp("tiny-gemma")
    texts = [p.read_text(encoding="utf-8") for p in SAMPLE_DATA.rglob("*.*")
             if p.suffix in (".json", ".jsonl", ".txt")]
    special = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=800, special_tokens=special,
                                                        show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>",
                                        eos_token="<eos>", bos_token="<bos>", unk_token="<unk>")
    tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=512,
        sliding_window=128, pad_token_id=0, eos_token_id=1, bos_token_id=2,
        initializer_range=0.2,  # with the default 0.02 the tied embeddings cap logits near zero
    )
    torch_seed(0)
    Gemma3ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def torch_seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


@pytest.fixture(scope="session")
def sample_dataset(tmp_path_factory) -> Path:
    """The sample data prepared once: OUT/dataset."""
    from conveyor.adapt.prepare import PrepareConfig, prepare

    out = tmp_path_factory.mktemp("prepared")
    prepare(out, PrepareConfig(), SAMPLE_DATA / "exam", SAMPLE_DATA / "terms",
            SAMPLE_DATA / "transcripts")
    return out / "dataset"
