"""The bench's open loop (bench/loadgen.py `open_loop`): every operation is started, in order,
none before its intended time, and the loop does not spin between starts (it once slept 0.3 ms
at a time, which uvloop's whole-millisecond timers turn into a busy loop that took a core from
the service under test)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bench import loadgen


async def test_every_operation_starts_in_order_and_none_early(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[int] = []
    sleeps = 0
    real_sleep = asyncio.sleep

    async def counted_sleep(delay: float, result: Any = None) -> Any:
        nonlocal sleeps
        sleeps += 1
        return await real_sleep(delay, result)

    async def op(i: int) -> None:
        started.append(i)

    monkeypatch.setattr(loadgen.asyncio, "sleep", counted_sleep)
    rate, duration = 20_000.0, 0.1
    result = await loadgen.open_loop(op, rate, duration, concurrency=64)
    total = int(rate * duration)
    assert started == list(range(total))
    assert result["completed"] == total
    assert result["errors"] == 0
    # Latency counts from the intended start; an instant operation started early would show
    # a negative one.
    assert min(result["latencies"]) >= 0
    # At most one sleep per millisecond of the run (and a few for stragglers), not one or
    # more per operation.
    assert sleeps <= duration / loadgen.TICK + 10
