"""What the gateway adds: latency, throughput, streaming, CPU — direct vs through the gateway.

A real service is started (`conveyor serve --runtime cmd`) over benchmarks/fast_upstream.py, an
OpenAI-compatible server that answers at once; every figure is measured against that same
upstream reached directly, in the same run. The load generator speaks HTTP/1.1 over raw asyncio
connections with keep-alive (an httpx client saturates near 700 requests/s here).

    python benchmarks/gateway_overhead.py [--seconds 5]

Goals on a 2-core machine: added p50 <= 0.3 ms at 1 client; >= 5,000 requests/s through the
gateway at 32 clients; <= 20 us of gateway CPU per streamed chunk; chunks leave the gateway as
they arrive (a paced stream keeps its pacing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httptools
import psutil

HERE = Path(__file__).parent
BODY = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "hello"}]}).encode()
STREAM_BODY = json.dumps({"model": "bench", "stream": True,
                          "messages": [{"role": "user", "content": "hello"}]}).encode()
PACED_BODY = json.dumps({"model": "bench", "stream": True, "pace": True,
                         "messages": [{"role": "user", "content": "hello"}]}).encode()


def request(port: int, body: bytes) -> bytes:
    return (b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:%d\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (port, len(body), body))


class Client(asyncio.Protocol):
    """One keep-alive connection sending the same request again as soon as it is answered."""

    def __init__(self, payload: bytes, until: float, latencies: list, firsts: list, chunks: list):
        self.payload, self.until = payload, until
        self.latencies, self.firsts, self.chunks = latencies, firsts, chunks
        self.parser = httptools.HttpResponseParser(self)
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport
        self._send()

    def _send(self):
        self.sent = time.perf_counter()
        self.first = None
        self.arrivals = []
        self.transport.write(self.payload)

    def data_received(self, data):
        self.parser.feed_data(data)

    def on_body(self, body):
        now = time.perf_counter()
        if self.first is None:
            self.first = now - self.sent
        self.arrivals.append(now)

    def on_message_complete(self):
        now = time.perf_counter()
        self.latencies.append(now - self.sent)
        self.firsts.append(self.first or 0.0)
        self.chunks.append([t - self.sent for t in self.arrivals])
        if now < self.until:
            self._send()
        else:
            self.transport.close()

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result(None)


async def load(port: int, body: bytes, clients: int, seconds: float) -> dict:
    loop = asyncio.get_running_loop()
    latencies, firsts, chunks = [], [], []
    until = time.perf_counter() + seconds
    started = time.perf_counter()
    connections = [await loop.create_connection(
        lambda: Client(request(port, body), until, latencies, firsts, chunks), "127.0.0.1", port)
        for _ in range(clients)]
    await asyncio.gather(*(protocol.done for _, protocol in connections))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {"n": len(ordered), "rate": len(ordered) / elapsed,
            "p50_ms": 1000 * ordered[len(ordered) // 2],
            "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
            "first_ms": 1000 * statistics.median(firsts) if firsts else 0.0,
            "chunks": chunks}


def run_load(port: int, body: bytes, clients: int, seconds: float) -> dict:
    try:
        import uvloop
        return uvloop.run(load(port, body, clients, seconds))
    except ModuleNotFoundError:
        return asyncio.run(load(port, body, clients, seconds))


def conveyor(*args: str, env: dict) -> str:
    return subprocess.run([sys.executable, "-m", "conveyor", *args], env=env, check=True,
                          capture_output=True, text=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="conveyor-bench-")
    env = dict(os.environ, CONVEYOR_HOME=home)
    upstream = f"{sys.executable} {HERE / 'fast_upstream.py'} $PORT"
    conveyor("serve", home, "--runtime", "cmd", "--command", upstream, "--name", "bench",
             "--public", "--port", "18765", "--detach", env=env)
    try:
        info = json.loads(conveyor("service", "bench", "--json", env=env))
        direct, through = info["replicas"][0]["port"], 18765
        gateway = psutil.Process(info["pid"])
        run_load(through, BODY, 4, 1.0)  # warm up both paths
        run_load(direct, BODY, 4, 1.0)
        rows = []

        def measure(label, body, clients, seconds):
            d = run_load(direct, body, clients, seconds)
            cpu = sum(gateway.cpu_times()[:2])
            g = run_load(through, body, clients, seconds)
            cpu = sum(gateway.cpu_times()[:2]) - cpu
            rows.append((label, d, g, cpu))
            return d, g, cpu

        d1, g1, _ = measure("1 client", BODY, 1, args.seconds)
        d32, g32, cpu32 = measure("32 clients", BODY, 32, args.seconds)
        ds, gs, cpus = measure("32 streams x20", STREAM_BODY, 32, args.seconds)
        dp, gp, _ = measure("paced stream", PACED_BODY, 1, 1.0)
    finally:
        conveyor("stop", "bench", env=env)

    print(f"{'':16}{'direct':>28}{'through the gateway':>34}")
    for label, d, g, _ in rows:
        print(f"{label:16}{d['rate']:>9.0f}/s p50 {d['p50_ms']:6.3f} p99 {d['p99_ms']:6.3f} ms"
              f"{g['rate']:>12.0f}/s p50 {g['p50_ms']:6.3f} p99 {g['p99_ms']:6.3f} ms")
    per_request = cpu32 / g32["n"]
    chunks_per_stream = statistics.median(len(c) for c in gs["chunks"])
    per_chunk = max(0.0, cpus / gs["n"] - per_request) / chunks_per_stream
    print(f"added p50 at 1 client: {g1['p50_ms'] - d1['p50_ms']:.3f} ms (goal <= 0.3)")
    print(f"requests/s at 32 clients: {g32['rate']:.0f} through vs {d32['rate']:.0f} direct"
          f" (ratio {g32['rate'] / d32['rate']:.2f}; goal >= 5000)")
    print(f"streams/s at 32 clients: {gs['rate']:.0f} through vs {ds['rate']:.0f} direct;"
          f" first chunk p50 {gs['first_ms']:.3f} vs {ds['first_ms']:.3f} ms")
    lag = 1000 * (statistics.median(c[-1] for c in gp["chunks"])
                  - statistics.median(c[-1] for c in dp["chunks"]))
    spread = statistics.median(1000 * (c[-1] - c[0]) for c in gp["chunks"])
    print(f"paced stream (20 chunks 10 ms apart): chunks spread over {spread:.1f} ms through the"
          f" gateway, last chunk {lag:+.3f} ms vs direct (buffering would bunch them up)")
    print(f"gateway CPU: {1e6 * per_request:.1f} us per request, {1e6 * per_chunk:.1f} us per"
          f" streamed chunk ({chunks_per_stream:.0f} body pieces a stream; goal <= 20)")


if __name__ == "__main__":
    main()
