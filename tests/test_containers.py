"""The container files: docker-compose.yml is valid Compose, the Dockerfile keeps its promises.

`docker compose config -q` needs only the client, not an engine; the test skips when neither
`docker compose` nor `docker-compose` is installed. No image is built here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def compose_command() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, timeout=30, check=False
        )
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_compose_file_is_valid() -> None:
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    result = subprocess.run(
        [*command, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_compose_runs_migrations_before_the_service() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    assert "image: postgres:15" in compose
    assert 'command: ["inbox", "migrate"]' in compose
    assert "condition: service_completed_successfully" in compose
    assert "condition: service_healthy" in compose
    assert "pgdata:/var/lib/postgresql/data" in compose


def test_dockerfile_promises() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    instructions = [line for line in dockerfile.splitlines() if not line.startswith("#")]
    text = "\n".join(instructions)
    assert len(re.findall(r"^FROM python:3\.11-slim", text, re.MULTILINE)) == 2  # multi-stage
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users
    assert users[-1] not in {"root", "0"}
    healthcheck = text[text.index("HEALTHCHECK") :].split("\n")[:2]
    assert "python" in " ".join(healthcheck)
    assert "curl" not in text
    assert "/healthz" in " ".join(healthcheck)
    assert "HOST=0.0.0.0" in text
    assert 'CMD ["inbox", "serve"]' in text
    assert "migrate" not in text.split("CMD", 1)[1]  # migrations are their own command


def test_dockerignore_keeps_secrets_and_clutter_out() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".env", ".venv", ".pgdata"} <= ignored
