"""`python -m bench.compare OLD NEW`: what moved between two bench runs (bench/compare.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import compare


def run(figures: list[dict[str, object]], checks: list[dict[str, object]]) -> dict[str, object]:
    return {"plan": {"quick": True}, "machine": {}, "figures": figures, "checks": checks}


def figure(target: str, rps: float, p50: float, workers: int | None = 1) -> dict[str, object]:
    return {
        "scenario": "1 POST /object",
        "target": target,
        "workers": workers,
        "throughput_rps": rps,
        "p50_ms": p50,
    }


def write(path: Path, data: dict[str, object]) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_prints_the_measures_and_verdicts_that_moved(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    check = {"name": "capacity / raw", "workers": 1, "value": 0.8, "target": ">= 0.7"}
    old = run(
        [figure("service at 690/s", 690, 10.0), figure("reference capacity", 1000, 5.0, None)],
        [{**check, "met": True}],
    )
    new = run(
        [figure("service at 1050/s", 700, 20.0), figure("reference capacity", 1050, 5.2, None)],
        [{**check, "value": 0.6, "met": False}],
    )
    status = compare.main(
        [str(write(tmp_path / "a.json", old)), str(write(tmp_path / "b.json", new))]
    )
    out = capsys.readouterr().out
    assert status == 0
    # The open-loop rate differs between runs: the rows still match, and only p50 moved.
    assert "1 measures moved by more than 10%" in out
    assert "| 1 POST /object | service at N/s | 1 | p50_ms | 10 | 20 | 2.00 |" in out
    assert "throughput_rps" not in out
    assert "1 checks changed verdict" in out
    assert "capacity / raw (workers 1): 0.8 -> 0.6 (>= 0.7): now MISSED" in out
