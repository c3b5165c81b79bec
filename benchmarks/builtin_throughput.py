"""Builtin runtime throughput: generated tokens/s with 8 concurrent clients against 1 client.

    .venv/bin/python benchmarks/builtin_throughput.py [--max-tokens 64] [--rounds 4] [--repeat 3]

Builds the tiny test model (a random Gemma 3, hidden size 64, tokenizer trained on
examples/domain-qa/data) in a temporary folder, serves it with `python -m
conveyor.serving.builtin` on loopback, and sends greedy completions of --max-tokens tokens
(the random model rarely ends on its own, so rows run to the limit): one client asking
--rounds × 8 times in turn, then 8 clients asking --rounds times each, at once. Throughput is
the sum of usage.completion_tokens over the wall time; best of --repeat runs. The ratio shows
what dynamic batching buys (the goal is at least 3×). Not a test: it prints figures, it
asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

DATA = Path(__file__).resolve().parents[1] / "examples" / "domain-qa" / "data"
PROMPTS = ["The seller", "CIF means", "신용장", "Incoterms", "FOB", "Hello", "무역 조건",
           "What is a letter of credit?"]
CLIENTS = 8


def build_model(folder: Path) -> Path:
    from conveyor.adapt.tiny_model import build_tiny_model

    texts = [p.read_text(encoding="utf-8") for p in DATA.rglob("*.*")
             if p.suffix in (".json", ".jsonl", ".txt")]
    return build_tiny_model(folder, texts)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(server: subprocess.Popen, url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}")
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not become healthy")


async def client(http: httpx.AsyncClient, url: str, index: int, rounds: int,
                 max_tokens: int) -> int:
    """Ask `rounds` completions one after another; the tokens generated."""
    tokens = 0
    for i in range(rounds):
        body = {"model": "tiny", "prompt": PROMPTS[(index + i) % len(PROMPTS)],
                "max_tokens": max_tokens, "temperature": 0}
        response = await http.post(f"{url}/v1/completions", json=body)
        response.raise_for_status()
        tokens += response.json()["usage"]["completion_tokens"]
    return tokens


async def measure(url: str, clients: int, rounds: int, max_tokens: int) -> tuple[int, float]:
    """Tokens generated and seconds taken by `clients` clients asking at once."""
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=300, limits=limits) as http:
        started = time.perf_counter()
        counts = await asyncio.gather(*(client(http, url, i, rounds, max_tokens)
                                        for i in range(clients)))
        return sum(counts), time.perf_counter() - started


def best(url: str, repeat: int, clients: int, rounds: int, max_tokens: int) -> tuple[int, float]:
    runs = [asyncio.run(measure(url, clients, rounds, max_tokens)) for _ in range(repeat)]
    return max(runs, key=lambda run: run[0] / run[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4, help="requests per client when 8 ask")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(Path(tmp) / "tiny")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "-m", "conveyor.serving.builtin", "--model", str(model),
             "--port", str(port), "--name", "tiny", "--max-batch", str(CLIENTS)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_healthy(server, url)
            asyncio.run(measure(url, CLIENTS, 1, args.max_tokens))  # warm up
            print(f"{'clients':>8}{'requests':>10}{'tokens':>8}{'seconds':>9}{'tokens/s':>10}")
            rates = {}
            for clients, rounds in ((1, args.rounds * CLIENTS), (CLIENTS, args.rounds)):
                tokens, seconds = best(url, args.repeat, clients, rounds, args.max_tokens)
                rates[clients] = tokens / seconds
                print(f"{clients:>8}{clients * rounds:>10}{tokens:>8}{seconds:>9.2f}"
                      f"{rates[clients]:>10.0f}")
            print(f"ratio {CLIENTS} clients / 1 client: {rates[CLIENTS] / rates[1]:.1f}x"
                  " (goal: at least 3x)")
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


if __name__ == "__main__":
    main()
