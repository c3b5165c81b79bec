"""The gateway's Prometheus metrics: requests, errors, latency, tokens, in-flight, replicas."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST.encode()
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
                   60, 120)
REPLICA_STATES = ("PROVISIONING", "HEALTHY", "RUNNING", "UNHEALTHY", "TERMINATED")


class GatewayMetrics:
    def __init__(self, service: str):
        self.registry = CollectorRegistry(auto_describe=True)
        labels = {"service": service}
        common = {"registry": self.registry, "namespace": "conveyor"}
        requests = Counter("gateway_requests", "Requests answered, by status class",
                           ["service", "code"], **common)
        self._by_class = {c: requests.labels(service=service, code=f"{c}xx") for c in range(1, 6)}
        errors = Counter("gateway_errors", "Requests that failed, by reason",
                         ["service", "reason"], **common)
        self._errors = errors
        self._service = service
        self.latency = Histogram("gateway_request_duration_seconds",
                                 "From the full request to the last byte of the answer",
                                 ["service"], buckets=LATENCY_BUCKETS, **common).labels(**labels)
        tokens = Counter("gateway_tokens", "Tokens in answered requests (streamed chunks count"
                         " one each when the runtime reports no usage)", ["service", "kind"], **common)
        self.prompt_tokens = tokens.labels(service=service, kind="prompt")
        self.completion_tokens = tokens.labels(service=service, kind="completion")
        self.in_flight = Gauge("gateway_in_flight_requests", "Requests being answered",
                               ["service"], **common).labels(**labels)
        replicas = Gauge("service_replicas", "Replicas by state", ["service", "state"], **common)
        self._replicas = {s: replicas.labels(service=service, state=s) for s in REPLICA_STATES}

    def answered(self, status: int, seconds: float) -> None:
        self._by_class.get(status // 100, self._by_class[5]).inc()
        self.latency.observe(seconds)

    def error(self, reason: str) -> None:
        self._errors.labels(service=self._service, reason=reason).inc()

    def set_replicas(self, counts: dict[str, int]) -> None:
        for state, gauge in self._replicas.items():
            gauge.set(counts.get(state, 0))

    def render(self) -> bytes:
        return generate_latest(self.registry)
