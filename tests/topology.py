"""Multi-process Redis topologies for tests: a Redis Cluster and a Sentinel-managed pair.

Every process listens on loopback only and is a child of the test process (it dies with it).
tests/conftest.py loads this module as a plugin, so its fixtures reach every test: the
session's ``redis_cluster``, and ``backend`` / ``url`` to run a test on both topologies.
``cluster_manager(cluster)`` / ``async_cluster_manager(cluster)`` give an emptied cluster
and a manager on it.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from redsession import AsyncSessionManager, SessionManager
from redsession.config import Settings
from redsession.services.embedded import RedisServer, _die_with_parent_hook, find_server_binary
from redsession.storage.connection import sync_client

_BUS_OFFSET = 10000  # Redis Cluster's bus listens on port + 10000
_PORT_RANGE = (20000, 29999)  # below the ephemeral range, so port + 10000 stays valid
_READY_TIMEOUT = 30.0


class TopologyError(RuntimeError):
    """A topology did not come up in time."""


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(n: int, *, bus: bool = False) -> list[int]:
    """``n`` free loopback ports (with ``bus``: whose +10000 is free too), never 6379."""
    rng = random.Random()
    out: list[int] = []
    for _ in range(1000):
        p = rng.randint(*_PORT_RANGE)
        if p in out or p == 6379 or not _free(p) or (bus and not _free(p + _BUS_OFFSET)):
            continue
        out.append(p)
        if len(out) == n:
            return out
    raise TopologyError(f"could not find {n} free ports")


def _wait(what: str, ready: Any, timeout: float = _READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except redis.RedisError as e:
            last = e
        time.sleep(0.1)
    raise TopologyError(f"{what} not ready within {timeout:g}s (last error: {last})")


def _client(port: int) -> redis.Redis:
    return redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=2)


def _streaming(port: int, probe: str, replicas: int) -> bool:
    """Whether the primary on ``port`` has ``replicas`` replicas that acknowledge its writes.

    A linked replica is not enough: after a diskless sync (the default), the primary streams
    nothing to the replica until its first REPLCONF ACK, up to a second later, and a primary
    killed in that second takes every write since the sync with it. ``probe`` is a key the
    primary owns; it is written, deleted, and WAITed for.
    """
    with _client(port) as c:
        c.set(probe, 1)
        c.delete(probe)
        return int(c.wait(replicas, 200)) >= replicas


class Cluster:
    """A Redis Cluster of ``masters`` primaries with ``replicas`` replicas each."""

    def __init__(self, base: Path, masters: int = 3, replicas: int = 1) -> None:
        self.base = base
        self.masters = masters
        self.replicas = replicas
        self.servers: list[RedisServer] = []

    @property
    def ports(self) -> list[int]:
        return [s.port for s in self.servers]

    @property
    def url(self) -> str:
        """``redis+cluster://`` with every node as a startup node."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start(self) -> None:
        n = self.masters * (1 + self.replicas)
        try:
            for i, port in enumerate(free_ports(n, bus=True)):
                server = RedisServer(
                    self.base / f"node-{i}", port=port,
                    extra_args=(
                        "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                        # Short, so a failover in a test takes seconds; loopback has no jitter.
                        "--cluster-node-timeout", "2000",
                        # Fail fast in tests rather than hang; production keeps the default.
                        "--cluster-require-full-coverage", "yes",
                        # Replicas sync at once (default: wait 5 s for more replicas to join).
                        "--repl-diskless-sync-delay", "0",
                    ),
                )  # fmt: skip
                self.servers.append(server)
                server.start()
            self._create()
        except BaseException:
            self.stop()
            raise

    def _create(self) -> None:
        addrs = [f"127.0.0.1:{p}" for p in self.ports]
        cli = shutil.which("redis-cli")
        if cli and self.replicas:
            subprocess.run(
                [cli, "--cluster", "create", *addrs, "--cluster-replicas", str(self.replicas),
                 "--cluster-yes"],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
        else:
            self._create_by_hand()
        _wait("cluster", self._consistent)
        _wait("replication", self._replicas_streaming)

    def _create_by_hand(self) -> None:
        """CLUSTER ADDSLOTSRANGE / MEET / REPLICATE, for hosts without redis-cli."""
        ports = self.ports
        primaries, rest = ports[: self.masters], ports[self.masters :]
        step = 16384 // self.masters
        for i, port in enumerate(primaries):
            hi = 16383 if i == self.masters - 1 else (i + 1) * step - 1
            with _client(port) as c:
                c.execute_command("CLUSTER", "ADDSLOTSRANGE", i * step, hi)
        with _client(ports[0]) as c:
            for port in ports[1:]:
                c.execute_command("CLUSTER", "MEET", "127.0.0.1", port)
        _wait("cluster meet", lambda: self._known(len(ports)))
        for i, port in enumerate(rest):
            with _client(primaries[i % self.masters]) as c:
                node_id = c.execute_command("CLUSTER", "MYID").decode()
            with _client(port) as c:
                c.execute_command("CLUSTER", "REPLICATE", node_id)

    def _known(self, n: int) -> bool:
        for port in self.ports:
            with _client(port) as c:
                if int(c.cluster("info")["cluster_known_nodes"]) != n:
                    return False
        return True

    def _consistent(self) -> bool:
        for port in self.ports:
            with _client(port) as c:
                info = c.cluster("info")
                if info["cluster_state"] != "ok" or int(info["cluster_known_nodes"]) != len(
                    self.ports
                ):
                    return False
                if int(info["cluster_slots_assigned"]) != 16384:
                    return False
                # A replica that has not synced yet cannot take over: wait for the link.
                repl = c.info("replication")
                if repl["role"] == "slave" and repl["master_link_status"] != "up":
                    return False
        return True

    def _replicas_streaming(self) -> bool:
        with self.client() as c:
            for node in c.get_primaries():
                probe = next(
                    k for k in (f"topology-probe-{i}" for i in range(100_000))
                    if c.get_node_from_key(k).port == node.port
                )  # fmt: skip
                if not _streaming(node.port, probe, self.replicas):
                    return False
        return True

    def client(self, **kwargs: Any) -> redis.RedisCluster:
        return redis.RedisCluster(host="127.0.0.1", port=self.ports[0], **kwargs)

    def primaries(self) -> list[int]:
        with self.client() as c:
            return sorted(n.port for n in c.get_primaries())

    def flush(self) -> None:
        """Empty every primary (replicas follow); the suite started this cluster."""
        with self.client() as c:
            c.flushall(target_nodes=redis.RedisCluster.PRIMARIES)

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A 3-primary, 3-replica cluster shared by the whole test session."""
    with Cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


@pytest.fixture(params=["single", "cluster"])
def backend(request: pytest.FixtureRequest) -> str:
    """Run the test on the suite's single server and again on its cluster."""
    return str(request.param)


@pytest.fixture
def url(backend: str, request: pytest.FixtureRequest) -> str:
    """The URL of ``backend``, emptied for this test (the suite started both servers)."""
    if backend == "cluster":
        cluster: Cluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        return cluster.url
    server: RedisServer = request.getfixturevalue("redis_server")
    with redis.Redis.from_url(server.url) as client:
        client.flushall()
    return server.url


def cluster_manager(
    cluster: Cluster, settings: Settings | None = None, **kw: Any
) -> SessionManager:
    """Empty ``cluster`` and return a SessionManager on it (close it when done).

    ``settings`` (or Settings(**kw)) gives timeouts, prefix and limits; the URL is the cluster's.
    """
    cluster.flush()
    s = settings or Settings(**kw)
    return SessionManager(sync_client(cluster.url, s), s)


def connected_clients(url: str, expected: int = 0) -> int:
    """Clients connected to the server at ``url``, less the probe asking. A socket closed
    just now may take the server a moment to see, so this waits up to a second for
    ``expected`` before it answers what it counts."""
    with redis.Redis.from_url(url) as probe:
        for _ in range(10):
            n = len(probe.client_list()) - 1
            if n == expected:
                break
            time.sleep(0.1)
        return n


def async_cluster_manager(
    cluster: Cluster, settings: Settings | None = None, **kw: Any
) -> AsyncSessionManager:
    """Empty ``cluster`` and return an AsyncSessionManager on it (await .close() when done)."""
    cluster.flush()
    s = settings or Settings(**kw)
    return AsyncSessionManager.from_url(cluster.url, **dict(s))


class SentinelSetup:
    """One master, ``replicas`` replicas and three sentinels watching them as ``service``."""

    def __init__(
        self, base: Path, service: str = "mymaster", quorum: int = 2, replicas: int = 1,
        down_after_ms: int = 1000,
    ) -> None:  # fmt: skip
        self.base = base
        self.down_after_ms = down_after_ms
        self.service = service
        self.quorum = quorum
        self.master: RedisServer | None = None
        self.replicas: list[RedisServer] = []
        self._replica_count = replicas
        self.sentinel_ports: list[int] = []
        self._sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    def start(self) -> None:
        try:
            m_port, *s_ports = free_ports(4)
            self.master = RedisServer(self.base / "master", port=m_port)
            self.master.start()
            for i in range(self._replica_count):
                replica = RedisServer(
                    self.base / f"replica-{i}",
                    extra_args=("--replicaof", "127.0.0.1", str(m_port)),
                )
                self.replicas.append(replica)
                replica.start()
            n = self._replica_count
            _wait("replication", lambda: _streaming(m_port, "topology-probe", n))
            binary = str(find_server_binary())
            for i, port in enumerate(s_ports):
                folder = self.base / f"sentinel-{i}"
                folder.mkdir(parents=True)
                conf = folder / "sentinel.conf"  # Sentinel rewrites its config: it needs a file
                conf.write_text(
                    f"port {port}\nbind 127.0.0.1\ndaemonize no\ndir {folder}\n"
                    f"logfile {folder / 'sentinel.log'}\n"
                    f"sentinel monitor {self.service} 127.0.0.1 {m_port} {self.quorum}\n"
                    # Short timings: a failover within a few seconds keeps the test short.
                    f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
                    f"sentinel failover-timeout {self.service} 10000\n"
                    f"sentinel parallel-syncs {self.service} 1\n"
                )
                self.sentinel_ports.append(port)
                self._sentinels.append(
                    subprocess.Popen(
                        [binary, str(conf), "--sentinel"],
                        cwd=folder,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        start_new_session=True,
                        preexec_fn=_die_with_parent_hook(),
                    )
                )
            _wait("sentinels", self._sentinels_agree)
        except BaseException:
            self.stop()
            raise

    def _sentinels_agree(self) -> bool:
        for port in self.sentinel_ports:
            with _client(port) as c:
                state = c.sentinel_master(self.service)
                if int(state["num-other-sentinels"]) != len(self.sentinel_ports) - 1:
                    return False
                if int(state["num-slaves"]) < self._replica_count:
                    return False
        return True

    def master_port(self) -> int:
        """The master as the sentinels currently name it."""
        with _client(self.sentinel_ports[0]) as c:
            _, port = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        return int(port)

    def stop(self) -> None:
        for proc in self._sentinels:
            proc.terminate()
        for proc in self._sentinels:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._sentinels.clear()
        for server in (*self.replicas, self.master):
            if server is not None:
                server.stop()

    def __enter__(self) -> SentinelSetup:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
