"""A measuring aid for one bench run (by its pid), not part of `make bench`: for each window in
which a poster load generator lives (one per fan-out measurement), the user and kernel CPU
seconds of the service (every worker) or the bare reference and of the inbox clients, from
/proc/<pid>/stat; with --perf, `perf record -e cpu-clock -g` on the server over the window;
with --pyspy, `py-spy record --nonblocking` (raw stacks) on each server process.

    .venv/bin/python -m bench --only fanout --workers 1 & \
        .venv/bin/python bench/cpu_windows.py $! /tmp/out [--perf|--pyspy]

One JSON line per window on stdout, all of them in OUTDIR/windows.json.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil

TICK = os.sysconf("SC_CLK_TCK")


def role(p: psutil.Process) -> str | None:
    try:
        cmd = " ".join(p.cmdline())
    except psutil.Error:
        return None
    if "bench.broadcast" in cmd:
        return "bare"
    if "bench.loadgen poster" in cmd:
        return "poster"
    if "bench.loadgen clients" in cmd:
        return "clients"
    if "-m service serve" in cmd:
        return "service"
    if "multiprocessing" in cmd and "resource_tracker" not in cmd:
        return "service"  # a worker of `inbox serve --workers N`
    return None


def stat(pid: int) -> tuple[float, float] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) / TICK, int(fields[12]) / TICK  # utime, stime


def main() -> None:
    bench_pid, outdir = int(sys.argv[1]), sys.argv[2]
    use_perf = "--perf" in sys.argv
    use_spy = "--pyspy" in sys.argv
    os.makedirs(outdir, exist_ok=True)
    root = psutil.Process(bench_pid)
    windows = []
    n = 0
    while root.is_running():
        try:
            kids = root.children(recursive=True)
        except psutil.Error:
            break
        roles = {p.pid: role(p) for p in kids}
        posters = [pid for pid, r in roles.items() if r == "poster"]
        if not posters:
            time.sleep(0.1)
            continue
        servers = {pid: r for pid, r in roles.items() if r in ("service", "bare")}
        clients = [pid for pid, r in roles.items() if r == "clients"]
        watched = {**servers, **{c: "clients" for c in clients}}
        before = {pid: stat(pid) for pid in watched}
        t0 = time.monotonic()
        perf = None
        n += 1
        kind = "bare" if "bare" in servers.values() else "service"
        if use_perf and servers:
            out = f"{outdir}/perf-{n}-{kind}.data"
            perf = subprocess.Popen(
                [
                    "perf",
                    "record",
                    "-q",
                    "-e",
                    "cpu-clock",
                    "-F",
                    "999",
                    "-g",
                    "-p",
                    ",".join(map(str, servers)),
                    "-o",
                    out,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        spies = []
        if use_spy:
            spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
            for pid in servers:
                spies.append(
                    subprocess.Popen(
                        [
                            spy,
                            "record",
                            "-p",
                            str(pid),
                            "-r",
                            "400",
                            "-f",
                            "raw",
                            "--nonblocking",
                            "-o",
                            f"{outdir}/spy-{n}-{kind}-{pid}.txt",
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
        last = dict(before)
        while psutil.pid_exists(posters[0]):
            for pid in watched:
                s = stat(pid)
                if s is not None:
                    last[pid] = s
            time.sleep(0.05)
        t1 = time.monotonic()
        for spy_proc in spies:
            spy_proc.send_signal(signal.SIGINT)
            spy_proc.wait()
        if perf is not None:
            perf.send_signal(signal.SIGINT)
            perf.wait()
        rec = {"n": n, "kind": kind, "seconds": round(t1 - t0, 2), "procs": []}
        for pid, r in watched.items():
            b, a = before[pid], last[pid]
            if b is None or a is None:
                continue
            rec["procs"].append(
                {
                    "pid": pid,
                    "role": r,
                    "user_s": round(a[0] - b[0], 2),
                    "sys_s": round(a[1] - b[1], 2),
                }
            )
        windows.append(rec)
        print(json.dumps(rec), flush=True)
    with open(f"{outdir}/windows.json", "w") as f:
        json.dump(windows, f, indent=1)


if __name__ == "__main__":
    main()
