"""Migrations: apply, re-apply (a no-op), and roll back cleanly one by one."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from service import migrate

from .test_cli import run

ROOT = Path(__file__).resolve().parent.parent


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename NOT LIKE '\\_yoyo%' AND tablename <> 'yoyo_lock'"
        ).fetchall()
    return {row[0] for row in rows}


def functions(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
        ).fetchall()
    return {row[0] for row in rows}


def all_migrations() -> list[str]:
    return sorted(p.stem for p in (ROOT / "migrations").glob("*.sql") if "rollback" not in p.name)


def test_apply_is_idempotent(scratch_database: str) -> None:
    assert migrate.apply(scratch_database) == all_migrations()
    assert migrate.apply(scratch_database) == []
    assert {"objects", "alerts", "object_alerts"} <= tables(scratch_database)


def test_each_migration_rolls_back_cleanly(scratch_database: str) -> None:
    migrate.apply(scratch_database)
    names = all_migrations()
    for expected in reversed(names):
        assert migrate.rollback(scratch_database, 1) == [expected]
    assert tables(scratch_database) == set()
    assert functions(scratch_database) == set()
    # and forward again, from nothing
    assert migrate.apply(scratch_database) == names


def test_schema_after_rolling_back_the_realtime_migration_still_works(
    scratch_database: str,
) -> None:
    migrate.apply(scratch_database)
    migrate.rollback(scratch_database, len(all_migrations()) - 1)  # back to 0001 only
    with psycopg.connect(scratch_database) as conn:
        alert_id = conn.execute("INSERT INTO alerts (text) VALUES ('x') RETURNING id").fetchone()
        assert alert_id is not None
        assert alert_id[0] >= 1
        assert "alerts_notify" not in functions(scratch_database)


def test_migrate_command_twice_is_harmless(scratch_database: str, tmp_path: Path) -> None:
    first = run(["migrate"], tmp_path, DATABASE_URL=scratch_database)
    second = run(["migrate"], tmp_path, DATABASE_URL=scratch_database)
    assert first.returncode == 0, first.stderr
    assert "applied: 0001.schema" in first.stdout
    assert second.returncode == 0, second.stderr
    assert "database is up to date" in second.stdout


@pytest.mark.parametrize("name", all_migrations())
def test_every_migration_has_a_rollback(name: str) -> None:
    assert (ROOT / "migrations" / f"{name}.rollback.sql").is_file()


def test_the_read_cursor_migration_rolls_back_and_forward_keeping_objects(
    scratch_database: str,
) -> None:
    migrate.apply(scratch_database)
    with psycopg.connect(scratch_database) as conn:
        conn.execute(
            "INSERT INTO objects (email, phone_number, acked_alert_id) VALUES ('a@b.c', '+1', 7)"
        )
    assert migrate.rollback(scratch_database, 2) == ["0005.notify_frame", "0004.read_cursor"]
    with psycopg.connect(scratch_database) as conn:
        columns = {
            row[0]
            for row in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'objects'"
            ).fetchall()
        }
        triggers = conn.execute(
            "SELECT count(*) FROM pg_trigger WHERE tgname = 'objects_ack_notify'"
        ).fetchone()
        assert conn.execute("SELECT email FROM objects").fetchall() == [("a@b.c",)]
    assert "acked_alert_id" not in columns
    assert triggers == (0,)
    assert "objects_ack_notify" not in functions(scratch_database)
    assert migrate.apply(scratch_database) == ["0004.read_cursor", "0005.notify_frame"]
    with psycopg.connect(scratch_database) as conn:
        assert conn.execute("SELECT acked_alert_id FROM objects").fetchall() == [(0,)]


def notified(url: str) -> dict[str, object]:
    """The payload of the NOTIFY of one alert to one new object, written by hand."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("LISTEN alerts")
        with conn.transaction():
            object_id = conn.execute(
                "INSERT INTO objects (email, phone_number) VALUES ('a@b.c', '+1') RETURNING id"
            ).fetchone()
            alert_id = conn.execute(
                "INSERT INTO alerts (text, number_of_objects_receiving_alert) "
                "VALUES ('x', 1) RETURNING id"
            ).fetchone()
            assert object_id is not None
            assert alert_id is not None
            conn.execute(
                "INSERT INTO object_alerts (object_id, alert_id) VALUES (%s, %s)",
                (object_id[0], alert_id[0]),
            )
        note = next(conn.notifies(timeout=5, stop_after=1))
    payload: dict[str, object] = json.loads(note.payload)
    return payload


def test_the_notify_frame_migration_rolls_back_to_the_payload_without_a_frame(
    scratch_database: str,
) -> None:
    migrate.apply(scratch_database)
    assert set(notified(scratch_database)) == {"alert_id", "object_ids", "frame"}
    assert migrate.rollback(scratch_database, 1) == ["0005.notify_frame"]
    assert set(notified(scratch_database)) == {"alert_id", "object_ids"}
    assert migrate.apply(scratch_database) == ["0005.notify_frame"]
    assert set(notified(scratch_database)) == {"alert_id", "object_ids", "frame"}
