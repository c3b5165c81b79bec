"""Sizes, durations, machine capacity, and the pool that hands out CPU, memory and GPU shares."""

from __future__ import annotations

import pytest

from conveyor.errors import ConfigError
from conveyor.pipelines.resources import (
    Capacity,
    Grant,
    Request,
    ResourcePool,
    format_size,
    parse_duration,
    parse_size,
    why_never_fits,
)

GIB = 1024**3


@pytest.mark.parametrize(("text", "expected"), [
    ("16g", 16 * GIB), ("16G", 16 * GIB), ("16GiB", 16 * GIB), ("16gb", 16 * GIB),
    ("512m", 512 * 1024**2), ("1.5g", int(1.5 * GIB)), ("0g", 0), ("2k", 2048),
    ("1t", 1024**4), ("100", 100), (" 8 g ", 8 * GIB), (4096, 4096), (2.5, 2),
])
def test_parse_size(text, expected) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["16x", "", "g", "-1g", "1.5.g", True, -1])
def test_parse_size_rejects(bad) -> None:
    with pytest.raises(ValueError, match="16g"):
        parse_size(bad)


@pytest.mark.parametrize(("text", "expected"), [
    ("90", 90.0), (90, 90.0), ("90s", 90.0), ("30m", 1800.0), ("2h", 7200.0),
    ("1d", 86400.0), ("250ms", 0.25), ("1.5h", 5400.0), (0, 0.0),
])
def test_parse_duration(text, expected) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("bad", ["soon", "5 min", "-5", -5, False, "1w"])
def test_parse_duration_rejects(bad) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize(("n", "expected"), [
    (16 * GIB, "16g"), (int(1.5 * GIB), "1.5g"), (512 * 1024**2, "512m"), (1024, "1k"),
    (1000, "1000"), (0, "0"), (2 * 1024**4, "2t"), (GIB + GIB // 3, "1.33g"),
])
def test_format_size(n, expected) -> None:
    assert format_size(n) == expected


# capacity


def test_capacity_parse() -> None:
    assert Capacity.parse("cpu=8,mem=32g,gpu=2") == Capacity(cpu=8, mem=32 * GIB, gpus=2)
    assert Capacity.parse(" CPU = 2.5 , gpus=1 ,") == Capacity(cpu=2.5, mem=0, gpus=1)


def test_capacity_parse_keeps_the_base_for_keys_left_out() -> None:
    base = Capacity(cpu=16, mem=64 * GIB, gpus=4)
    assert Capacity.parse("gpu=0", base=base) == Capacity(cpu=16, mem=64 * GIB, gpus=0)
    assert Capacity.parse("", base=base) == base


@pytest.mark.parametrize(("text", "why"), [
    ("cpu", "expected key=value"),
    ("cpu=many", "many"),
    ("gpu=1.5", "1.5"),
    ("disk=1t", "unknown key 'disk'"),
    ("mem=lots", "'lots' is not a size"),
])
def test_capacity_parse_rejects_with_an_example(text, why) -> None:
    with pytest.raises(ConfigError) as caught:
        Capacity.parse(text)
    message = str(caught.value)
    assert message.startswith(f"capacity {text!r}: ")
    assert why in message
    assert message.endswith("(example: cpu=8,mem=32g,gpu=2)")


def test_capacity_describe_round_trips() -> None:
    capacity = Capacity(cpu=4, mem=int(1.5 * GIB), gpus=1)
    assert capacity.describe() == "cpu=4,mem=1.5g,gpu=1"
    assert Capacity.parse(capacity.describe()) == capacity


# never fits


MACHINE = Capacity(cpu=8, mem=16 * GIB, gpus=2)


def test_why_never_fits_is_none_when_it_fits() -> None:
    assert why_never_fits(Request(cpu=8, mem=16 * GIB, gpu_shares=2), 1, MACHINE) is None
    assert why_never_fits(Request(cpu=4, mem=8 * GIB, gpu_shares=1), 2, MACHINE) is None


def test_why_never_fits_names_each_resource() -> None:
    reason = why_never_fits(Request(cpu=3, mem=6 * GIB, gpu_shares=0.75), 3, MACHINE)
    assert reason == ("asks for 9 CPUs (the machine has 8) and 18g of memory (the machine"
                      " has 16g) and 2.25 GPU shares (the machine has 2 GPUs)")
    assert why_never_fits(Request(gpu_shares=0.5), 1, Capacity(cpu=8, mem=0, gpus=0)) == (
        "asks for 0.5 GPU shares (the machine has 0 GPUs)")


def test_why_never_fits_knows_a_share_cannot_span_two_devices() -> None:
    # three nodes of 0.6 need 1.8 shares, less than 2, but no device holds two of them
    request = Request(cpu=1, gpu_shares=0.6)
    assert ResourcePool(MACHINE).try_acquire_all(request, 3) is None
    assert why_never_fits(request, 3, MACHINE) is not None


# the pool


def test_cpu_and_memory_are_accounted() -> None:
    pool = ResourcePool(Capacity(cpu=4, mem=8 * GIB, gpus=0))

    first = pool.try_acquire(Request(cpu=3, mem=2 * GIB))
    assert first == Grant(cpu=3, mem=2 * GIB)
    assert (pool.free_cpu, pool.free_mem) == (1, 6 * GIB)
    assert pool.try_acquire(Request(cpu=2, mem=GIB)) is None  # not enough CPU
    assert pool.try_acquire(Request(cpu=1, mem=7 * GIB)) is None  # not enough memory
    assert (pool.free_cpu, pool.free_mem) == (1, 6 * GIB)  # failed asks take nothing

    pool.release(first)
    assert (pool.free_cpu, pool.free_mem) == (4, 8 * GIB)


def test_tenths_of_a_cpu_add_up_exactly() -> None:
    pool = ResourcePool(Capacity(cpu=0.3, mem=0, gpus=0))
    assert all(pool.try_acquire(Request(cpu=0.1)) for _ in range(3))  # 0.3 - 0.1 - 0.1 < 0.1
    assert pool.try_acquire(Request(cpu=0.1)) is None


def test_half_shares_share_one_device_and_a_third_waits() -> None:
    pool = ResourcePool(Capacity(cpu=8, mem=0, gpus=1))
    half = Request(cpu=1, gpu_shares=0.5)

    first, second = pool.try_acquire(half), pool.try_acquire(half)
    assert first.gpus == second.gpus == ((0, 0.5),)
    assert first.visible_devices == "0"
    assert pool.try_acquire(half) is None

    pool.release(first)
    third = pool.try_acquire(half)
    assert third is not None and third.gpus == ((0, 0.5),)


def test_one_and_a_half_shares_take_a_whole_device_and_half_of_another() -> None:
    pool = ResourcePool(Capacity(cpu=8, mem=0, gpus=2))

    grant = pool.try_acquire(Request(cpu=1, gpu_shares=1.5))

    assert grant.gpus == ((0, 1.0), (1, 0.5))
    assert grant.visible_devices == "0,1"
    assert grant.as_dict()["gpus"] == [{"index": 0, "share": 1.0}, {"index": 1, "share": 0.5}]
    assert pool.free_gpu_milli == [0, 500]
    assert pool.try_acquire(Request(cpu=1, gpu_shares=0.6)) is None
    assert pool.try_acquire(Request(cpu=1, gpu_shares=0.5)).gpus == ((1, 0.5),)


def test_fractions_go_to_the_fullest_device_that_holds_them() -> None:
    pool = ResourcePool(Capacity(cpu=8, mem=0, gpus=3))
    pool.try_acquire(Request(cpu=1, gpu_shares=0.3))  # device 0: 0.7 free
    pool.try_acquire(Request(cpu=1, gpu_shares=0.7))  # best fit: device 0 again, now full
    pool.try_acquire(Request(cpu=1, gpu_shares=0.5))  # device 1: 0.5 free
    assert pool.free_gpu_milli == [0, 500, 1000]

    small = pool.try_acquire(Request(cpu=1, gpu_shares=0.4))
    whole = pool.try_acquire(Request(cpu=1, gpu_shares=1))

    assert small.gpus == ((1, 0.4),)  # not the idle device 2
    assert whole.gpus == ((2, 1.0),)


def test_try_acquire_all_is_all_or_nothing() -> None:
    pool = ResourcePool(Capacity(cpu=8, mem=8 * GIB, gpus=2))
    request = Request(cpu=2, mem=2 * GIB, gpu_shares=1)

    assert pool.try_acquire_all(request, 3) is None
    assert (pool.free_cpu, pool.free_mem, pool.free_gpu_milli) == (8, 8 * GIB, [1000, 1000])

    grants = pool.try_acquire_all(request, 2)
    assert [g.gpus for g in grants] == [((0, 1.0),), ((1, 1.0),)]
    assert (pool.free_cpu, pool.free_mem, pool.free_gpu_milli) == (4, 4 * GIB, [0, 0])
    for grant in grants:
        pool.release(grant)
    assert (pool.free_cpu, pool.free_mem, pool.free_gpu_milli) == (8, 8 * GIB, [1000, 1000])
