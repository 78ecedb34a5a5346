"""The settings' documentation, generated from `config.SETTINGS`: `.env.example` and the
README's settings table (`make docs`; tests/test_config.py checks both are current).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from .config import SETTINGS

_EXAMPLES = {
    "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/inbox",
    "DB_USERNAME": "postgres",
    "DB_PASSWORD": "secret",
    "DB_SERVER": "127.0.0.1",
    "DB_NAME": "inbox",
    "LISTEN_DATABASE_URL": "postgresql://postgres@primary.internal:5432/inbox",
}


def settings_table() -> str:
    rows = ["| setting | default | meaning |", "| --- | --- | --- |"]
    for s in SETTINGS:
        default = f"`{s.default}`" if s.default else ""
        rows.append(f"| `{s.env}` | {default} | {s.help} |")
    return "\n".join(rows) + "\n"


def env_example() -> str:
    lines = [
        "# Settings of the inbox service. Copy to .env (or export them); the environment wins.",
        "# With no DATABASE_URL and no DB_* set, the service runs its own embedded PostgreSQL.",
        "# Generated from service/config.py by `make docs`.",
        "",
    ]
    for s in SETTINGS:
        lines += [f"# {line}" for line in textwrap.wrap(s.help, 94)]
        example = _EXAMPLES.get(s.env)
        lines.append(f"# {s.env}={example}" if example else f"{s.env}={s.default}")
        lines.append("")
    return "\n".join(lines)


def write_docs(root: Path) -> None:
    """Rewrite .env.example and the README's settings table from SETTINGS."""
    (root / ".env.example").write_text(env_example())
    readme = root / "README.md"
    start, end = "<!-- settings-table:start -->\n", "<!-- settings-table:end -->"
    text = readme.read_text()
    head, rest = text.split(start)
    _, tail = rest.split(end)
    readme.write_text(head + start + settings_table() + end + tail)


if __name__ == "__main__":
    write_docs(Path.cwd())
