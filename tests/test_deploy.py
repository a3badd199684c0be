"""deploy/: every file checked as far as this machine allows (parse, CLI, systemd, real servers)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import redis
import yaml

from redsession.config import Settings
from redsession.services.embedded import RedisServer, _die_with_parent_hook, find_server_binary
from tests.topology import free_ports

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
K8S = sorted((DEPLOY / "k8s").glob("*.yaml"))
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))


def _cli() -> click.Group:
    cli_module = pytest.importorskip("redsession.cli")
    group = getattr(cli_module, "cli", None)
    if not isinstance(group, click.Group):
        pytest.skip("redsession.cli has no click group yet")
    return group


def _compose() -> dict[str, Any]:
    doc = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert isinstance(doc, dict)
    return doc


def _k8s_docs() -> list[dict[str, Any]]:
    return [d for path in K8S for d in yaml.safe_load_all(path.read_text()) if d]


def _containers() -> Iterator[dict[str, Any]]:
    for doc in _k8s_docs():
        if doc["kind"] in ("Deployment", "StatefulSet"):
            yield from doc["spec"]["template"]["spec"]["containers"]


def _command_lines() -> list[tuple[str, list[str]]]:
    """(where, argv after "redsession") for every redsession command deploy/ runs."""
    lines: list[tuple[str, list[str]]] = []
    for name, svc in _compose()["services"].items():
        if svc.get("image", "").startswith("redsession") or "build" in svc:
            lines.append((f"compose {name}", list(svc["command"])))
        test = svc.get("healthcheck", {}).get("test", [])
        if test[1:2] == ["redsession"]:
            lines.append((f"compose {name} healthcheck", test[2:]))
    for c in _containers():
        if c["image"].startswith("redsession"):
            lines.append((f"k8s {c['name']}", list(c["args"])))
        for probe in ("livenessProbe", "readinessProbe"):
            cmd = c.get(probe, {}).get("exec", {}).get("command", [])
            if cmd[:1] == ["redsession"]:
                lines.append((f"k8s {c['name']} {probe}", cmd[1:]))
    for unit in UNITS:
        (exec_start,) = re.findall(r"^ExecStart=(.*)$", unit.read_text(), re.M)
        argv = shlex.split(exec_start)
        assert argv[0].endswith("/redsession")
        lines.append((unit.name, argv[1:]))
    return lines


def test_yaml_parses() -> None:
    assert _compose()["services"]
    kinds = [d["kind"] for d in _k8s_docs()]
    assert kinds.count("Deployment") == 2
    assert "StatefulSet" in kinds
    kustomize = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    assert sorted(kustomize["resources"]) == sorted(
        p.name for p in K8S if p.name != "kustomization.yaml"
    )


def test_compose_has_redis_with_a_volume_worker_and_mcp_with_health_checks() -> None:
    services = _compose()["services"]
    assert set(services) == {"redis", "worker", "mcp"}
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])
    assert services["worker"]["healthcheck"]["test"] == ["CMD", "redsession", "worker", "--check"]
    for name, svc in services.items():
        assert svc.get("restart") == "unless-stopped", name
        assert "healthcheck" in svc, name
    # Redis is reachable from the services only, and MCP only from the host's loopback.
    assert "ports" not in services["redis"]
    assert all(p.startswith("127.0.0.1:") for p in services["mcp"]["ports"])


def test_every_command_deploy_runs_exists_in_the_cli() -> None:
    cli = _cli()
    lines = _command_lines()
    assert {argv[0] for _, argv in lines} >= {"worker", "mcp"}
    for where, argv in lines:
        name, *rest = argv
        assert name in cli.commands, f"{where}: no command {name!r} in the CLI"
        command = cli.commands[name]
        try:  # parses and checks every option and value without running the command
            command.make_context(name, list(rest))
        except click.ClickException as e:
            pytest.fail(f"{where}: `redsession {shlex.join(argv)}`: {e.format_message()}")


def test_worker_check_and_mcp_flags_exist() -> None:
    cli = _cli()
    worker_opts = {o for p in cli.commands["worker"].params for o in p.opts}
    mcp_opts = {o for p in cli.commands["mcp"].params for o in p.opts}
    assert "--check" in worker_opts
    assert {"--transport", "--host", "--port"} <= mcp_opts


def _env_names() -> set[str]:
    names: set[str] = set()
    for svc in _compose()["services"].values():
        names |= set(svc.get("environment", {}))
    for c in _containers():
        names |= {e["name"] for e in c.get("env", [])}
    for path in [*UNITS, DEPLOY / "systemd" / "redsession.env"]:
        names |= set(re.findall(r"(REDSESSION_[A-Z_]+)=", path.read_text()))
    return {n for n in names if n.startswith("REDSESSION_")}


def test_environment_variables_are_settings_or_cli_options() -> None:
    cli = _cli()
    cli_env = {p.envvar for p in cli.params if isinstance(p.envvar, str)}
    known = {f"REDSESSION_{f.upper()}" for f in Settings.model_fields} | cli_env
    names = _env_names()
    assert "REDSESSION_REDIS_URL" in names
    assert names <= known, names - known


def _conf(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            out[key] = value
    return out


def test_redis_conf_is_durable_noeviction_and_every_setting_commented() -> None:
    text = (DEPLOY / "redis.conf").read_text()
    conf = _conf(text)
    assert conf["appendonly"] == "yes"
    assert conf["maxmemory-policy"] == "noeviction"
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() and not line.startswith("#"):
            assert lines[i - 1].startswith("#"), f"no comment above {line!r}"


def test_k8s_redis_config_matches_deploy_redis_conf() -> None:
    (cm,) = [d for d in _k8s_docs() if d["kind"] == "ConfigMap"]
    k8s = _conf(cm["data"]["redis.conf"])
    ours = _conf((DEPLOY / "redis.conf").read_text())
    for key in ("appendonly", "appendfsync", "maxmemory-policy", "aof-use-rdb-preamble", "save"):
        assert k8s[key] == ours[key], key


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_analyze_verify(unit: Path, tmp_path: Path) -> None:
    text = unit.read_text()
    assert re.search(r"^Restart=(on-failure|always)$", text, re.M)
    # verify checks that ExecStart's binary exists: point it at this environment's.
    here = Path(sys.executable).parent / "redsession"
    if not here.exists():
        pytest.skip("the redsession console script is not installed")
    copy = tmp_path / unit.name
    copy.write_text(text.replace("/opt/redsession/bin/redsession", str(here)))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    complaints = [ln for ln in (done.stdout + done.stderr).splitlines() if unit.name in ln]
    assert done.returncode == 0, done.stdout + done.stderr
    assert not complaints, done.stdout + done.stderr


def test_sentinel_conf_starts_a_sentinel(tmp_path: Path) -> None:
    m_port, s_port = free_ports(2)
    text = (DEPLOY / "sentinel.conf").read_text()
    name, _, _, quorum = _monitor(text)
    assert int(quorum) == 2  # a majority of three sentinels
    assert _conf(text)["port"] == "26379"
    # Only the addresses change for the test: every other line runs as shipped.
    local = re.sub(r"^port .*$", f"port {s_port}", text, flags=re.M)
    local = re.sub(r"^bind .*$", "bind 127.0.0.1", local, flags=re.M)
    local = re.sub(r"^dir .*$", f"dir {tmp_path}", local, flags=re.M)
    local = re.sub(r"10\.0\.0\.10 6379", f"127.0.0.1 {m_port}", local)
    (tmp_path / "sentinel.conf").write_text(local)
    with RedisServer(
        tmp_path / "master", port=m_port, password="change-me"
    ):  # the auth-pass of sentinel.conf
        proc = subprocess.Popen(
            [str(find_server_binary()), str(tmp_path / "sentinel.conf"), "--sentinel"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_die_with_parent_hook(),
        )  # fmt: skip
        try:
            state = _sentinel_state(s_port, name)
            assert int(state["port"]) == m_port
            assert int(state["quorum"]) == 2
            assert int(state["down-after-milliseconds"]) == 5000
            assert "s_down" not in state["flags"]
        finally:
            proc.terminate()
            proc.wait(10)


def _monitor(text: str) -> tuple[str, str, str, str]:
    (line,) = re.findall(r"^sentinel monitor (\S+) (\S+) (\S+) (\S+)$", text, re.M)
    return line


def _sentinel_state(port: int, name: str) -> dict[str, Any]:
    client = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)
    deadline = time.monotonic() + 15
    try:
        while True:
            try:
                state: dict[str, Any] = client.sentinel_master(name)
                # A recent INFO from the master: auth-pass let the sentinel log in.
                if "disconnected" not in state["flags"] and int(state["info-refresh"]) < 10_000:
                    return state
            except redis.RedisError:
                pass
            assert time.monotonic() < deadline, "the sentinel did not come up"
            time.sleep(0.1)
    finally:
        client.close()


def test_cluster_bootstrap_script(tmp_path: Path) -> None:
    script = DEPLOY / "cluster-bootstrap.sh"
    assert subprocess.run(["sh", "-n", str(script)], check=False).returncode == 0
    if shutil.which("redis-cli") is None:
        pytest.skip("no redis-cli")
    usage = subprocess.run([str(script), "h:1"], capture_output=True, text=True, timeout=30)
    assert usage.returncode == 2
    assert "usage" in usage.stderr
    ports = free_ports(3, bus=True)
    servers = [
        RedisServer(tmp_path / f"n{i}", port=p, password="pw",
                    extra_args=("--cluster-enabled", "yes", "--masterauth", "pw"))
        for i, p in enumerate(ports)
    ]  # fmt: skip
    try:
        for s in servers:
            s.start()
        nodes = [f"127.0.0.1:{p}" for p in ports]
        done = subprocess.run(
            [str(script), "-r", "0", "-a", "pw", *nodes], capture_output=True, text=True,
            timeout=90,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"redis+cluster://{','.join(nodes)}" in done.stdout
        c = redis.RedisCluster(host="127.0.0.1", port=ports[0], password="pw")
        try:
            assert c.cluster_info()["cluster_state"] == "ok"
            c.set("k", "v")
            assert c.get("k") == b"v"
        finally:
            c.close()
        # A second run refuses to touch nodes that are already in a cluster.
        again = subprocess.run(
            [str(script), "-r", "0", "-a", "pw", *nodes], capture_output=True, text=True,
            timeout=30,
        )  # fmt: skip
        assert again.returncode == 1
        assert "already part of a cluster" in again.stderr
    finally:
        for s in servers:
            s.stop()
