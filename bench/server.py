"""The server's CPU per operation, counted in instructions: redis-server under callgrind.

The harness starts its own redis-server under valgrind (AOF on, appendfsync everysec, as the
timed runs), loads the operations benchmark's sessions, and for each (implementation,
operation) zeroes the counters, runs COUNT calls, dumps them and divides the total by COUNT.
The total is the whole server: reading and parsing the request, the script, its writes fed
to the AOF, the reply. Counts repeat within ~1.5% from run to run (the same calls on the
same data; the server's own timers run meanwhile), where the server's seconds (INFO
commandstats) move with the machine's load.

    python -m bench.server
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from bench import suite
from bench.ops import Impl, Raw, Redsession
from bench.report import Table
from redsession.services.embedded import find_server_binary

OPS = ("log_interaction", "resume")
IMPLS: dict[str, type[Impl]] = {"redsession": Redsession, "hand-rolled": Raw}
WARMUP, COUNT = 30, 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _total(dump: Path) -> int:
    for line in dump.read_text().splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {dump}")


def measure(count: int = COUNT) -> dict[str, dict[str, int]]:
    """{impl: {op: server instructions per call}}."""
    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp:
        d = Path(tmp)
        port, out = _free_port(), d / "callgrind.out"
        server = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
             str(find_server_binary()), "--port", str(port), "--bind", "127.0.0.1",
             "--dir", str(d), "--appendonly", "yes", "--appendfsync", "everysec",
             "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"redis://127.0.0.1:{port}/0"
        admin = redis.Redis.from_url(url)
        try:
            for _ in range(600):  # valgrind starts the server slowly
                try:
                    admin.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.1)
            ds = suite.build_dataset(url, 20, 100)
            counts: dict[str, dict[str, int]] = {}
            for name, impl in IMPLS.items():
                fns = impl().sync(ds)
                counts[name] = {}
                for op in OPS:
                    for i in range(WARMUP):
                        fns[op](i)
                    before = set(d.glob("callgrind.out.*"))
                    _control(server.pid, "-z")
                    for i in range(WARMUP, WARMUP + count):
                        fns[op](i)
                    _control(server.pid, "-d")
                    [dump] = _wait_for_new(d, before)
                    counts[name][op] = round(_total(dump) / count)
            return counts
        finally:
            with contextlib.suppress(redis.RedisError):  # the shutdown drops the connection
                admin.shutdown(nosave=True)
            admin.close()
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()


def _control(pid: int, flag: str) -> None:
    subprocess.run(["callgrind_control", flag, str(pid)], check=True, capture_output=True)


def _wait_for_new(d: Path, before: set[Path]) -> list[Path]:
    for _ in range(100):
        new = sorted(set(d.glob("callgrind.out.*")) - before)
        if new:
            time.sleep(0.2)  # the dump is written by the time callgrind_control returns
            return new
        time.sleep(0.1)
    raise RuntimeError("callgrind wrote no dump")


def table(counts: dict[str, dict[str, int]]) -> Table:
    t = Table(
        "Server CPU per operation — redis-server instructions per call (callgrind)",
        ["operation", "implementation", "instructions", "x hand-rolled"],
    )
    for op in OPS:
        base = counts["hand-rolled"][op]
        for impl, by_op in counts.items():
            t.rows.append([op, impl, f"{by_op[op]:,}", f"{by_op[op] / base:.3f}"])
    t.notes.append(
        f"{COUNT} calls per figure after {WARMUP} untimed, round robin over the operations "
        "benchmark's sessions (20 interactions each); the whole server per call: request, "
        "script, AOF feed, reply"
    )
    return t


if __name__ == "__main__":
    print(table(measure()).text())
    sys.exit(0)
