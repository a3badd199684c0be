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
    python -m bench.canned --check       # CI: fail on a regression of more than 10%
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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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
TOLERANCE = 0.10  # a count this much above the committed baseline fails --check
LIMIT = 1.5  # the target: redsession at most this many times the hand-rolled count
ENV = {"PYTHONHASHSEED": "0"}  # dict and set order, hence instruction counts, repeat
SID, UID = "canned-session", "canned-user"
CLOCK = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)


class _Socket:
    """The socketpair a canned connection talks to."""

    def __init__(self) -> None:
        self.reset()

    def reset(self, reply: bytes = b"") -> None:
        """A fresh pair (a closed client closes its end) and the reply to serve on it."""
        self.client_end, self.server_end = socket.socketpair()
        self.server_end.setblocking(False)
        self.reply = reply

    def serve(self) -> None:
        """Before an operation: drop what the last one sent, queue the recorded reply."""
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
        return CANNED.client_end

    def on_connect_check_health(self, check_health: bool = True) -> None:
        self._parser.on_connect(self)


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
    client.connection_pool.connection_class = connection  # before any connection exists
    return client


def operations(
    impl: str, url: str, connection: type[Connection]
) -> dict[str, Callable[[], object]]:
    """One call of each operation, on session SID of user UID, as ``impl`` does it."""
    client = _client(impl, url, connection)
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
        ops = operations(impl, url, TapConnection)
        out[impl] = {}
        for op, call in ops.items():
            call()  # warms the connection (and loads redsession's script)
            TAPS[-1].got.clear()
            call()
            out[impl][op] = bytes(TAPS[-1].got).hex()
    return out


def run(impl: str, op: str, n: int, replies: Path) -> None:
    """The measured process: ``n`` operations on canned replies, after a warm-up."""
    CANNED.reset(bytes.fromhex(json.loads(replies.read_text())[impl][op]))
    call = operations(impl, "redis://127.0.0.1:1/0", CannedConnection)[op]
    for _ in range(WARMUP + n):
        CANNED.serve()
        call()


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.canned", description=__doc__)
    p.add_argument("--run", nargs=4, metavar=("IMPL", "OP", "N", "REPLIES"), help="internal")
    p.add_argument("--check", action="store_true", help="fail on a regression over 10%%")
    p.add_argument("--update", action="store_true", help=f"rewrite {BASELINE.name}")
    args = p.parse_args(argv)
    if args.check and args.update:
        p.error("--check counts redsession only; --update needs every implementation")
    if args.check and not BASELINE.exists():
        p.error(f"--check needs {BASELINE} (make it with --update)")
    if args.run:
        impl, op, n, replies = args.run
        run(impl, op, int(n), Path(replies))
        return 0
    # The check counts redsession alone (what it gates); the report, every implementation.
    impls = ("redsession",) if args.check else IMPLS
    counts = measure(impls=impls)
    base = json.loads(BASELINE.read_text()) if BASELINE.exists() else {}
    worse = []
    for impl in impls:
        for op in OPS:
            got, was = counts[impl][op], base.get(impl, {}).get(op)
            change = f" ({got / was - 1:+.1%} against {was:,})" if was else ""
            print(f"{impl:28s} {op:16s} {got:>12,} instructions{change}")
            if impl == "redsession" and was and got > was * (1 + TOLERANCE):
                worse.append(f"{op}: {got:,} > {was:,} + {TOLERANCE:.0%}")
    for op in OPS if "hand-rolled" in counts else ():
        ratio = counts["redsession"][op] / counts["hand-rolled"][op]
        print(f"redsession / hand-rolled, {op}: {ratio:.3f}x (target: at most {LIMIT}x)")
    if args.update:
        BASELINE.write_text(json.dumps(counts, indent=2) + "\n")
    if args.check and worse:
        print("instruction count regressed: " + "; ".join(worse), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
