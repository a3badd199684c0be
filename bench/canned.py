"""Client CPU per operation, counted in instructions, with no server: canned replies.

Each operation's reply is recorded once from a real server, as the bytes came off the socket.
The counting run replays it: the client packs and sends its command into one end of a
socketpair, the harness has already written the recorded reply into the other end, and
hiredis parses it as it would a server's. All that the client does for an operation
(validation, encoding, redis-py's command path, parsing, decoding, building the models) runs;
no server does, and no network wait. The count is valgrind's callgrind total (instructions,
which repeat run after run on a noisy machine, where seconds do not); each operation's count
is (count(2N) - count(N)) / N, so interpreter start-up and imports cancel.

    python -m bench.canned               # counts, against bench/instructions.json
    python -m bench.canned --check       # CI: fail when redsession's count, as a ratio to
                                         # the hand-rolled store's, grows more than 10%
    python -m bench.canned --update      # rewrite bench/instructions.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import redis
from redis.connection import Connection

from bench import data
from bench.ops import HISTORY, Dataset, _RawCommon, _resume_result

OPS = ("log_interaction", "resume")
IMPLS = ("redsession", "hand-rolled", "hand-rolled, plain client")
WARMUP = 30
COUNT = 60  # N: operations per measurement (and 2N)
BASELINE = Path(__file__).with_name("instructions.json")
TOLERANCE = 0.10  # a ratio to the hand-rolled count this much above the baseline fails --check
LIMIT = 1.5  # the target: redsession at most this many times the hand-rolled count
ENV = {"PYTHONHASHSEED": "0"}  # dict and set order, hence instruction counts, repeat
SID, UID = "canned-session", "canned-user"
CLOCK = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)


class _Socket:
    """The socketpair a canned connection talks to."""

    def __init__(self) -> None:
        self.client_end: socket.socket | None = None
        self.server_end: socket.socket | None = None

    def reset(self, reply: bytes = b"") -> None:
        """A fresh pair and the reply to serve on it."""
        self.close()
        self.client_end, self.server_end = socket.socketpair()
        self.server_end.setblocking(False)
        self.reply = reply
        self.armed = False

    def close(self) -> None:
        for end in (self.client_end, self.server_end):
            if end is not None:
                end.close()
        self.client_end = self.server_end = None

    def arm(self) -> None:
        """Before an operation: its first command gets the recorded reply."""
        self.armed = True

    def serve(self) -> None:
        """After the operation's first command: drop what it sent, queue the recorded reply.

        Never before: redis-py checks a connection it takes from the pool for unread data
        (since 8.2 it reads that data as push notifications), as it would a stale reply.
        """
        if not self.armed or self.server_end is None:
            return
        self.armed = False
        try:
            while self.server_end.recv(1 << 20):
                pass
        except BlockingIOError:
            pass
        self.server_end.sendall(self.reply)


CANNED = _Socket()


class CannedConnection(Connection):
    """Its socket is the canned one, and it skips the handshake: the pool is warm."""

    def _connect(self) -> socket.socket:
        if CANNED.client_end is None:
            raise ConnectionError("no canned socket (CANNED.reset first)")
        return CANNED.client_end

    def on_connect_check_health(self, check_health: bool = True) -> None:
        self._parser.on_connect(self)

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]
        CANNED.serve()


class _Tap:
    """A socket that keeps what it receives (to record a real server's reply)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.got = bytearray()

    def recv_into(self, buf: Any, nbytes: int = 0, flags: int = 0) -> int:
        n = self._sock.recv_into(buf, nbytes, flags)
        self.got += bytes(memoryview(buf)[:n])
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


TAPS: list[_Tap] = []


class TapConnection(Connection):
    def _connect(self) -> socket.socket:
        tap = _Tap(super()._connect())  # type: ignore[no-untyped-call]
        TAPS.append(tap)
        return tap  # type: ignore[return-value]


def _client(impl: str, url: str, connection: type[Connection]) -> redis.Redis:
    """The client ``impl`` makes (production options, or redis-py's defaults)."""
    if impl == "hand-rolled, plain client":
        return redis.Redis.from_url(url, connection_class=connection)
    from redsession.config import Settings
    from redsession.storage.connection import sync_client

    client: redis.Redis = sync_client(url, Settings())  # type: ignore[assignment]
    # Over the class sync_client chose (its packing too), before any connection exists.
    pool = client.connection_pool
    pool.connection_class = type(connection.__name__, (connection, pool.connection_class), {})
    return client


@contextmanager
def operations(
    impl: str, url: str, connection: type[Connection]
) -> Iterator[dict[str, Callable[[], object]]]:
    """One call of each operation, on session SID of user UID, as ``impl`` does it."""
    client = _client(impl, url, connection)
    try:
        yield _calls(impl, url, client)
    finally:
        client.close()


def _calls(impl: str, url: str, client: redis.Redis) -> dict[str, Callable[[], object]]:
    if impl == "redsession":
        from redsession import SessionManager

        # A fixed clock: the replayed reply holds the time of the recorded call (the time of
        # the entry an append stored), and it must be this call's, or the client would take
        # the path of a repeated operation id (core/history.py _append).
        m = SessionManager(client, clock=lambda: CLOCK)
        return {
            "log_interaction": lambda: m.log_interaction(
                SID, user_message=data.USER_MESSAGE, assistant_response=data.ASSISTANT_RESPONSE,
                metadata=data.METADATA, topics=data.TOPICS, user_id=UID,
            ),
            "resume": lambda: m.resume_session(SID, UID),
        }  # fmt: skip
    c = _RawCommon(Dataset(url, [], [], [], []))
    return {
        "log_interaction": lambda: client.evalsha(*c.log_args(SID, UID)),
        "resume": lambda: _resume_result(client.evalsha(*c.resume_args(SID, UID))),
    }


def record(url: str) -> dict[str, dict[str, str]]:
    """The reply of one call of each (impl, op), from the server at ``url``, hex-encoded."""
    from bench.ops import _SCRIPTS
    from redsession import SessionManager

    with SessionManager.from_url(url) as m:
        m.create_session(UID, session_id=SID)
        for _ in range(HISTORY):
            m.log_interaction(
                SID, user_message=data.USER_MESSAGE, assistant_response=data.ASSISTANT_RESPONSE,
                metadata=data.METADATA, topics=data.TOPICS,
            )  # fmt: skip
        for src in _SCRIPTS.values():
            m.client.script_load(src)
    out: dict[str, dict[str, str]] = {}
    for impl in IMPLS:
        out[impl] = {}
        with operations(impl, url, TapConnection) as ops:
            for op, call in ops.items():
                call()  # warms the connection (and loads redsession's script)
                TAPS[-1].got.clear()
                call()
                out[impl][op] = bytes(TAPS[-1].got).hex()
    return out


def run(impl: str, op: str, n: int, replies: Path, warmup: int = WARMUP) -> object:
    """The measured process: ``n`` operations on canned replies, after a warm-up; the last
    one's result."""
    CANNED.reset(bytes.fromhex(json.loads(replies.read_text())[impl][op]))
    result = None
    with operations(impl, "redis://127.0.0.1:1/0", CannedConnection) as ops:
        for _ in range(warmup + n):
            CANNED.arm()
            result = ops[op]()
    CANNED.close()
    return result


def _callgrind(impl: str, op: str, n: int, replies: Path, out: Path) -> int:
    cmd = [
        "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
        sys.executable, "-m", "bench.canned", "--run", impl, op, str(n), str(replies),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, **ENV})
    found = re.search(r"^summary: (\d+)$", out.read_text(), re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no summary line in {out}")
    return int(found.group(1))


def count(
    replies: Path, workdir: Path, n: int = COUNT, impls: tuple[str, ...] = IMPLS
) -> dict[str, dict[str, int]]:
    """Instructions per operation, for every (impl, op): callgrind runs, two at a time."""
    jobs = [(impl, op, k) for impl in impls for op in OPS for k in (n, 2 * n)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        totals = list(pool.map(
            lambda j: _callgrind(j[0], j[1], j[2], replies, workdir / f"cg-{jobs.index(j)}"),
            jobs,
        ))  # fmt: skip
    by = dict(zip(jobs, totals))
    return {
        impl: {op: (by[(impl, op, 2 * n)] - by[(impl, op, n)]) // n for op in OPS}
        for impl in impls
    }


def measure(n: int = COUNT, impls: tuple[str, ...] = IMPLS) -> dict[str, dict[str, int]]:
    """Record replies from a private server, then count every (impl, op) without it."""
    from bench.harness import server

    if shutil.which("valgrind") is None:
        raise RuntimeError("valgrind is not installed (apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="redsession-canned-") as tmp:
        replies = Path(tmp) / "replies.json"
        with server() as srv:
            replies.write_text(json.dumps(record(srv.url)))
        return count(replies, Path(tmp), n, impls)


def versions() -> dict[str, str]:
    """What the counts depend on besides redsession: the interpreter and the client library."""
    from importlib.metadata import version

    return {
        "python": ".".join(map(str, sys.version_info[:3])),
        **{dist: version(dist) for dist in ("redis", "hiredis")},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.canned", description=__doc__)
    p.add_argument("--run", nargs=4, metavar=("IMPL", "OP", "N", "REPLIES"), help="internal")
    p.add_argument("--check", action="store_true", help="fail on a regression over 10%%")
    p.add_argument("--update", action="store_true", help=f"rewrite {BASELINE.name}")
    args = p.parse_args(argv)
    if args.check and args.update:
        p.error("--check counts two implementations; --update needs every one")
    if args.check and not BASELINE.exists():
        p.error(f"--check needs {BASELINE} (make it with --update)")
    if args.run:
        impl, op, n, replies = args.run
        run(impl, op, int(n), Path(replies))
        return 0
    # The check gates redsession's count as a ratio to the hand-rolled store's, both counted
    # in this run: a new redis-py or Python moves every count (redis-py 8.2 added ~84,000
    # instructions to each command), and only the ratio tells redsession's own change apart.
    impls = ("redsession", "hand-rolled") if args.check else IMPLS
    counts = measure(impls=impls)
    base = json.loads(BASELINE.read_text()) if BASELINE.exists() else {}
    was_counts, was_versions = base.get("counts", {}), base.get("measured with", {})
    for impl in impls:
        for op in OPS:
            got, was = counts[impl][op], was_counts.get(impl, {}).get(op)
            change = f" ({got / was - 1:+.1%} against {was:,})" if was else ""
            print(f"{impl:28s} {op:16s} {got:>12,} instructions{change}")
    if was_versions and was_versions != versions():
        print(f"the baseline was counted with {was_versions}; this run, with {versions()}")
    worse = []
    for op in OPS:
        ratio = counts["redsession"][op] / counts["hand-rolled"][op]
        line = f"redsession / hand-rolled, {op}: {ratio:.3f}x (target: at most {LIMIT}x"
        if all(op in was_counts.get(impl, {}) for impl in ("redsession", "hand-rolled")):
            was = was_counts["redsession"][op] / was_counts["hand-rolled"][op]
            line += f"; baseline {was:.3f}x"
            if ratio > was * (1 + TOLERANCE):
                worse.append(f"{op}: {ratio:.3f}x > {was:.3f}x + {TOLERANCE:.0%}")
        print(line + ")")
    if args.update:
        out = {"measured with": versions(), "counts": counts}
        BASELINE.write_text(json.dumps(out, indent=2) + "\n")
    if args.check and worse:
        print("instruction count regressed: " + "; ".join(worse), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
