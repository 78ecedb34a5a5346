"""The README's curl examples, run as written (only the port differs) against a live server."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def curl_examples() -> list[tuple[str, str | None]]:
    """(command, the documented output or None) for each curl command in a sh block."""
    examples = []
    for block in re.findall(r"```sh\n(.*?)```", README, flags=re.DOTALL):
        lines = block.replace("\\\n", " ").splitlines()
        for i, line in enumerate(lines):
            if line.startswith("curl "):
                following = lines[i + 1] if i + 1 < len(lines) else ""
                expected = following[2:] if following.startswith("# {") else None
                examples.append((line, expected))
    return examples


def same_shape(actual: Any, documented: Any) -> bool:
    """Same keys and the same values, except values the README elides with "..."."""
    if documented == "...":
        return True
    if isinstance(documented, dict):
        return (
            isinstance(actual, dict)
            and set(actual) == set(documented)
            and all(same_shape(actual[k], v) for k, v in documented.items())
        )
    if isinstance(documented, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(documented)
            and all(same_shape(a, d) for a, d in zip(actual, documented, strict=True))
        )
    return bool(actual == documented)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_readme_curl_examples_work_as_written(client: TestClient[Any, Any]) -> None:
    examples = curl_examples()
    assert len(examples) >= 3
    for command, expected in examples:
        command = command.replace("localhost:8000", f"127.0.0.1:{client.server.port}")
        proc = await asyncio.create_subprocess_shell(
            command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, err
        body = json.loads(out)
        assert "error" not in body, (command, body)
        if expected is not None:
            assert same_shape(body, json.loads(expected)), (command, body, expected)
