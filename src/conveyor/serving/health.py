"""Replica and service health: the states, the probe, and how replica states add up."""

from __future__ import annotations

import asyncio
from enum import StrEnum

from conveyor.serving.folder import HealthCheck


class ReplicaState(StrEnum):
    PROVISIONING = "PROVISIONING"  # started, not yet answering its health check
    HEALTHY = "HEALTHY"
    RUNNING = "RUNNING"  # up, but its runtime has no health check (cmd): not known healthy
    UNHEALTHY = "UNHEALTHY"  # exited or failed its checks; no traffic; about to be restarted
    TERMINATED = "TERMINATED"  # stopped on purpose (scale-down, service stop)

    @property
    def serving(self) -> bool:
        return self in (ReplicaState.HEALTHY, ReplicaState.RUNNING)


class ServiceStatus(StrEnum):
    PROVISIONING = "PROVISIONING"
    HEALTHY = "HEALTHY"
    RUNNING = "RUNNING"
    DEGRADED = "DEGRADED"
    UNHEALTHY = "UNHEALTHY"
    STOPPED = "STOPPED"
    FAILED = "FAILED"  # could not start at all


def service_status(states: list[ReplicaState]) -> ServiceStatus:
    """HEALTHY when every replica is, DEGRADED when some are, UNHEALTHY when none is;
    PROVISIONING while none has come up yet and none has failed."""
    live = [s for s in states if s != ReplicaState.TERMINATED]
    serving = [s for s in live if s.serving]
    if live and len(serving) == len(live):
        return ServiceStatus.HEALTHY if ReplicaState.HEALTHY in serving else ServiceStatus.RUNNING
    if serving:
        return ServiceStatus.DEGRADED
    if live and all(s == ReplicaState.PROVISIONING for s in live):
        return ServiceStatus.PROVISIONING
    return ServiceStatus.UNHEALTHY


async def probe(host: str, port: int, check: HealthCheck | None) -> str | None:
    """None when the replica passes `check`; otherwise what went wrong. Without a check,
    passing means the port accepts connections."""
    timeout = check.max_wait_time if check else 2.0
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        if check is None:
            return None
        writer.write(f"GET {check.path} HTTP/1.1\r\nhost: {host}:{port}\r\n"
                     "connection: close\r\n\r\n".encode())
        status_line = await asyncio.wait_for(reader.readline(), timeout)
    except asyncio.TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as err:
        return err.strerror or str(err)
    finally:
        if writer is not None:
            writer.close()
    parts = status_line.split()
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    if status != check.expected_status_code:
        return f"GET {check.path} answered {status or 'nothing'}" \
               f" (expected {check.expected_status_code})"
    return None
