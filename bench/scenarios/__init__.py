"""One module per scenario, named as in plan.py (`SERVICE_SCENARIOS`, `STANDALONE_SCENARIOS`).

A service scenario defines `async def run(bench: Bench, server: Server, workers: int) -> None`
and runs against each `inbox serve --workers W`; a standalone one defines
`async def run(bench: Bench) -> None` and runs once. Each records its figures and checks in
`bench.results`. To add one: a name in plan.py and a module of that name here.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import Any


def runner(name: str) -> Callable[..., Awaitable[None]]:
    module: Any = importlib.import_module(f"{__name__}.{name}")
    run: Callable[..., Awaitable[None]] = module.run
    return run
