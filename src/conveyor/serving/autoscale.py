"""When to add or remove a replica: in-flight requests per replica, averaged over the last
cooldown period, against a scale-up and a scale-down threshold. After every change the next
judgement waits a full cooldown, so it rests on load measured with the new replica count."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class ScalePolicy:
    min_replicas: int
    max_replicas: int
    scale_up_at: float = 4.0  # average in-flight requests per replica above which one is added
    scale_down_at: float = 0.5  # ... below which one is removed
    cooldown: float = 30.0  # seconds after a change before the next one; also the averaging window

    @property
    def fixed(self) -> bool:
        return self.min_replicas == self.max_replicas


class Autoscaler:
    def __init__(self, policy: ScalePolicy, started_at: float):
        self.policy = policy
        self.last_change = started_at
        self._samples: deque[tuple[float, int]] = deque()

    def observe(self, at: float, in_flight: int) -> None:
        self._samples.append((at, in_flight))
        while self._samples and self._samples[0][0] < at - self.policy.cooldown:
            self._samples.popleft()

    def decide(self, at: float, replicas: int) -> int:
        """+1, -1 or 0 replicas; `replicas` are those taking traffic or coming up."""
        policy = self.policy
        if replicas < policy.min_replicas:
            return +1
        if replicas > policy.max_replicas:
            return -1
        if policy.fixed or at - self.last_change < policy.cooldown or not self._samples:
            return 0
        load = sum(n for _, n in self._samples) / len(self._samples) / max(replicas, 1)
        if load > policy.scale_up_at and replicas < policy.max_replicas:
            return +1
        if load < policy.scale_down_at and replicas > policy.min_replicas:
            return -1
        return 0

    def changed(self, at: float) -> None:
        self.last_change = at
        self._samples.clear()
