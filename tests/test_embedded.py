"""The embedded PostgreSQL and its known traps, each exercised in a real child process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import testbed
from service import embedded

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def server_running(data_dir: Path) -> bool:
    pid_file = data_dir / "postmaster.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().split()[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


START = (
    "import sys, time; from pathlib import Path; from service import embedded; "
    "s = embedded.start(Path(sys.argv[1])); print(s.url, flush=True); "
    "time.sleep(float(sys.argv[2])); s.stop()"
)


def test_prune_stale_handles_keeps_live_pids(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / embedded.HANDLE_LIST).write_text(json.dumps([os.getpid(), dead.pid]))
    assert embedded.prune_stale_handles(tmp_path) == [dead.pid]
    assert json.loads((tmp_path / embedded.HANDLE_LIST).read_text()) == [os.getpid()]


def test_initdb_works_under_a_locale_that_is_not_installed(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg"
    env = testbed.child_env(LANG="xx_XX.UTF-8", LC_ALL="xx_XX.UTF-8")
    result = subprocess.run(
        [sys.executable, "-c", START, str(data_dir), "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("postgresql://")
    assert (data_dir / "PG_VERSION").exists()
    assert not server_running(data_dir), "a normal exit must stop the server"


def test_a_killed_holder_does_not_keep_the_server_running(tmp_path: Path) -> None:
    """A process killed with SIGKILL leaves its pid in the wheel's handle list; the next run
    must not take that as another live user and leave the server running forever."""
    data_dir = tmp_path / "pg"
    holder = subprocess.Popen(
        [sys.executable, "-c", START, str(data_dir), "60"],
        cwd=ROOT,
        env=testbed.child_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().startswith("postgresql://")
    holder.kill()
    holder.wait()
    holder.stdout.close()
    assert server_running(data_dir)
    result = subprocess.run(
        [sys.executable, "-c", START, str(data_dir), "0"],
        cwd=ROOT,
        env=testbed.child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert not server_running(data_dir)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_service_and_its_embedded_server(tmp_path: Path, signum: int) -> None:
    data_dir = tmp_path / "pg"
    port = testbed.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "serve"],
        cwd=tmp_path,
        env=testbed.child_env(EMBEDDED_DATA_DIR=str(data_dir), PORT=str(port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        testbed.wait_ready(f"http://127.0.0.1:{port}/healthz", lambda: proc.poll() is None)
        assert server_running(data_dir)
        proc.send_signal(signum)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert f'psql "postgresql://postgres:@/inbox?host={data_dir}"' in output  # ready to paste
    assert "Traceback" not in output
    assert not server_running(data_dir)
    assert json.loads((data_dir / embedded.HANDLE_LIST).read_text()) == []
