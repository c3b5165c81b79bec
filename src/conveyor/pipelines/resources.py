"""Machine capacity, task requests, and the pool that hands out CPU, memory and GPU shares.

GPU shares follow Backend.AI's fractional GPU: `cuda.shares: 0.5` takes half of
one device, `1.5` one whole device and half of another. Shares are counted in
thousandths so that 0.1 + 0.2 fits exactly where 0.3 does.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

import psutil

from conveyor.errors import ConfigError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*$", re.IGNORECASE)
_UNIT = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
MILLI = 1000  # GPU shares are counted in thousandths of a device


def parse_size(value: str | int | float) -> int:
    """Bytes from `16g`, `512m`, `1.5G`, `0g` or a plain number of bytes."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size; write it like 16g or 512m")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a size; write it like 16g or 512m")
        if value < 0:
            raise ValueError(f"{value!r} is negative; a size is 0 or more, like 16g")
        return int(value)
    match = _SIZE.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a size; write it like 16g or 512m")
    number, unit = match.groups()
    return int(float(number) * _UNIT[unit.lower()])


def parse_duration(value: str | int | float) -> float:
    """Seconds from `90`, `90s`, `30m`, `2h`."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; write it like 90, 30m or 2h")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a duration; write it like 90, 30m or 2h")
        seconds = float(value)
    else:
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a duration; write it like 90, 30m or 2h")
        number, unit = match.groups()
        seconds = float(number) * _SECONDS[(unit or "s").lower()]
    if seconds < 0:
        raise ValueError(f"{value!r} is negative; a duration is 0 or more")
    return seconds


def format_size(n: int) -> str:
    """`16g`, `1.5g`, `512m`: the largest unit, at most two decimals."""
    for unit in ("t", "g", "m", "k"):
        if n >= _UNIT[unit]:
            return f"{round(n / _UNIT[unit], 2):g}{unit}"
    return str(n)


@dataclass(frozen=True)
class Capacity:
    """What one machine offers: CPU cores, memory in bytes, whole GPU devices."""

    cpu: float
    mem: int
    gpus: int

    @classmethod
    def parse(cls, text: str, base: Capacity | None = None) -> Capacity:
        """`cpu=8,mem=32g,gpu=2`; keys left out keep their value from `base`."""
        base = base or cls(cpu=0, mem=0, gpus=0)
        values = {"cpu": base.cpu, "mem": base.mem, "gpus": base.gpus}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, raw = part.partition("=")
            key = key.strip().lower()
            try:
                if not sep:
                    raise ValueError("expected key=value")
                if key == "cpu":
                    values["cpu"] = float(raw)
                elif key == "mem":
                    values["mem"] = parse_size(raw)
                elif key in ("gpu", "gpus"):
                    values["gpus"] = int(raw)
                else:
                    raise ValueError(f"unknown key {key!r}; use cpu, mem or gpu")
            except ValueError as err:
                raise ConfigError(
                    f"capacity {text!r}: {part!r}: {err} (example: cpu=8,mem=32g,gpu=2)"
                ) from None
        return cls(**values)

    @classmethod
    def detect(cls) -> Capacity:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return cls(cpu=float(cpus or 1), mem=psutil.virtual_memory().total, gpus=count_gpus())

    def describe(self) -> str:
        return f"cpu={self.cpu:g},mem={format_size(self.mem)},gpu={self.gpus}"


def count_gpus() -> int:
    """GPUs that `nvidia-smi -L` lists; 0 where there is no NVIDIA driver."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


@dataclass(frozen=True)
class Request:
    """What one process of a task asks for."""

    cpu: float = 1.0
    mem: int = 0
    gpu_shares: float = 0.0

    @property
    def gpu_milli(self) -> int:
        return round(self.gpu_shares * MILLI)


@dataclass(frozen=True)
class Grant:
    """What one process of a task was given; `gpus` pairs a device index with its share."""

    cpu: float
    mem: int
    gpus: tuple[tuple[int, float], ...] = ()

    @property
    def visible_devices(self) -> str:
        return ",".join(str(index) for index, _ in self.gpus)

    def as_dict(self) -> dict:
        return {
            "cpu": self.cpu,
            "mem": format_size(self.mem),
            "gpus": [{"index": index, "share": share} for index, share in self.gpus],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Grant:
        return cls(cpu=float(data.get("cpu", 0)), mem=parse_size(data.get("mem", 0)),
                   gpus=tuple((g["index"], g["share"]) for g in data.get("gpus", [])))


def why_never_fits(request: Request, copies: int, capacity: Capacity) -> str | None:
    """Why `copies` processes asking for `request` could never run together here, or None."""
    reasons = []
    if request.cpu * copies > capacity.cpu:
        reasons.append(f"{request.cpu * copies:g} CPUs (the machine has {capacity.cpu:g})")
    if request.mem * copies > capacity.mem:
        reasons.append(f"{format_size(request.mem * copies)} of memory"
                       f" (the machine has {format_size(capacity.mem)})")
    shares = request.gpu_shares * copies
    if shares > capacity.gpus:
        reasons.append(f"{shares:g} GPU shares (the machine has {capacity.gpus} GPUs)")
    if not reasons and ResourcePool(capacity).try_acquire_all(request, copies) is None:
        # the total fits, but one process's fraction cannot be split across devices
        reasons.append(f"{copies} processes of {request.gpu_shares:g} GPU shares each, which"
                       f" {capacity.gpus} GPUs cannot hold (a fraction must fit on one device)")
    return "asks for " + " and ".join(reasons) if reasons else None


@dataclass
class ResourcePool:
    """Free capacity of one machine; acquire and release are all-or-nothing."""

    capacity: Capacity
    free_cpu: float = field(init=False)
    free_mem: int = field(init=False)
    free_gpu_milli: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.free_cpu = self.capacity.cpu
        self.free_mem = self.capacity.mem
        self.free_gpu_milli = [MILLI] * self.capacity.gpus

    def try_acquire(self, request: Request) -> Grant | None:
        if request.cpu > self.free_cpu + 1e-9 or request.mem > self.free_mem:
            return None
        devices = self._pick_gpus(request.gpu_milli)
        if devices is None:
            return None
        self.free_cpu -= request.cpu
        self.free_mem -= request.mem
        for index, milli in devices:
            self.free_gpu_milli[index] -= milli
        gpus = tuple((index, milli / MILLI) for index, milli in devices)
        return Grant(cpu=request.cpu, mem=request.mem, gpus=gpus)

    def try_acquire_all(self, request: Request, copies: int) -> list[Grant] | None:
        """Grants for every process of a multi-node task, or none at all."""
        grants: list[Grant] = []
        for _ in range(copies):
            grant = self.try_acquire(request)
            if grant is None:
                for given in grants:
                    self.release(given)
                return None
            grants.append(grant)
        return grants

    def hold(self, grant: Grant) -> None:
        """Count a grant made elsewhere (another run, a service) as taken; may go below zero."""
        self.free_cpu -= grant.cpu
        self.free_mem -= grant.mem
        for index, share in grant.gpus:
            if index < len(self.free_gpu_milli):
                self.free_gpu_milli[index] -= round(share * MILLI)

    def release(self, grant: Grant) -> None:
        self.free_cpu = min(self.capacity.cpu, self.free_cpu + grant.cpu)
        self.free_mem = min(self.capacity.mem, self.free_mem + grant.mem)
        for index, share in grant.gpus:
            if index < len(self.free_gpu_milli):
                self.free_gpu_milli[index] += round(share * MILLI)

    def _pick_gpus(self, milli: int) -> list[tuple[int, int]] | None:
        """Whole free devices for the integer part, then the fullest device that holds the rest."""
        if milli == 0:
            return []
        whole, rest = divmod(milli, MILLI)
        idle = [i for i, free in enumerate(self.free_gpu_milli) if free == MILLI]
        if len(idle) < whole:
            return None
        chosen = [(i, MILLI) for i in idle[:whole]]
        if rest:
            taken = {i for i, _ in chosen}
            candidates = [
                (free, i)
                for i, free in enumerate(self.free_gpu_milli)
                if i not in taken and free >= rest
            ]
            if not candidates:
                return None
            _, best = min(candidates)  # best fit keeps whole devices free for big asks
            chosen.append((best, rest))
        return chosen
