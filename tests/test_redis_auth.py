"""Redis authentication and TLS against spawned servers: requirepass, an ACL user, rediss://.

The ACL rule is read from docs/security.md, so the documented rule is the tested one.
The TLS servers keep their plain loopback port too: RedisServer checks readiness over it.
"""

from __future__ import annotations

import datetime as dt
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from redsession import (
    ConfigError,
    PermissionDenied,
    SessionManager,
    StorageError,
    StorageUnavailable,
)
from redsession.mirror.database import Database
from redsession.services.embedded import RedisServer, ServerError
from redsession.services.leader import LeaderLock
from redsession.storage.keys import Keys
from tests.conftest import ServerFactory, dirty_ids

DOCS = Path(__file__).resolve().parents[1] / "docs" / "security.md"
APP_PASSWORD = "app pw/with:odd@chars"


# -- requirepass ---------------------------------------------------------------------------


def test_requirepass_right_password_works(server_factory: ServerFactory) -> None:
    server = server_factory(password="s3cret")
    with SessionManager.from_url(server.url) as m:
        sid = m.create_session("alice").session_id
        assert m.resume_session(sid, "alice").user_id == "alice"


@pytest.mark.parametrize("password", [None, "wrong"])
def test_requirepass_wrong_or_missing_password_is_storage_unavailable(
    server_factory: ServerFactory, password: str | None
) -> None:
    server = server_factory(password="s3cret")
    auth = f":{password}@" if password else ""
    # redis-py raises AuthenticationError (a ConnectionError) on the first command; with no
    # password at all, the server refuses its HELLO ("... already authenticated ...").
    with (
        SessionManager.from_url(f"redis://{auth}127.0.0.1:{server.port}/0") as m,
        pytest.raises(StorageUnavailable, match=r"invalid username-password|authenticated"),
    ):
        m.create_session("alice")


# -- ACL user ------------------------------------------------------------------------------


def _documented_acl_rule() -> str:
    found = re.findall(r"^ACL SETUSER redsession .*$", DOCS.read_text("utf-8"), re.MULTILINE)
    assert len(found) == 1, "docs/security.md must hold exactly one ACL SETUSER line"
    return found[0]


@pytest.fixture
def acl_server(server_factory: ServerFactory) -> Iterator[tuple[RedisServer, redis.Redis]]:
    """A server whose default user needs a password, plus the documented redsession user."""
    server = server_factory(password="admin-pw")
    admin = redis.Redis.from_url(server.url)
    rule = _documented_acl_rule().split()
    assert rule[:3] == ["ACL", "SETUSER", "redsession"]
    args = [a.replace("<password>", APP_PASSWORD) for a in rule[2:]]
    assert admin.execute_command("ACL", "SETUSER", *args) == b"OK"  # type: ignore[no-untyped-call]
    yield server, admin
    admin.close()


def _app_url(server: RedisServer, user: str = "redsession", pw: str = APP_PASSWORD) -> str:
    from urllib.parse import quote

    return f"redis://{quote(user, safe='')}:{quote(pw, safe='')}@127.0.0.1:{server.port}/0"


def test_acl_user_runs_every_manager_operation(
    acl_server: tuple[RedisServer, redis.Redis], tmp_path: Path
) -> None:
    server, admin = acl_server
    with SessionManager.from_url(_app_url(server)) as m:
        a = m.create_session("alice", context={"lang": "en"}).session_id
        b = m.create_session("alice", session_id="second").session_id
        assert m.create_or_resume_session("alice", a) == a
        m.log_interaction(a, user_message="hi", assistant_response="hello", topics=["t"])
        m.log_interaction(b, user_message="yo", metadata={"k": [1, 2]})
        m.update_context(a, {"lang": None, "tz": "UTC"})
        assert m.set_preferences("alice", {"theme": "dark"}) == {"theme": "dark"}
        assert m.set_preferences("alice", {"theme": None, "tz": "UTC"}) == {"tz": "UTC"}
        assert m.get_preferences("alice") == {"tz": "UTC"}
        assert m.client.ping()  # health checks
        assert m.resume_session(a, "alice").context == {"tz": "UTC"}
        assert m.get_session(a, history=5, user_id="alice").total_interactions == 1
        assert [i.user_message for i in m.get_history(b, limit=10)] == ["yo"]
        assert {s.session_id for s in m.list_active_sessions("alice").sessions} == {a, b}
        # The item history: every script of it (appends, reads, pops, replacing).
        m.append_items(b, [{"role": "user", "content": "x"}], user_id="alice")
        m.append_items("third", [{"n": 1}], create_for="alice", user_id="alice")
        assert m.get_items("third") == [{"n": 1}]
        assert len(m.history_since(b, dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc))) == 2
        assert m.pop_item(b) == {"role": "user", "content": "x"}
        m.log_interaction(b, user_message="q", assistant_response="a")
        assert m.pop_item(b) == {"role": "assistant", "content": "a"}  # splits an interaction
        m.replace_history("third", [{"n": 2}])
        m.clear_history("third")
        m.delete_session("third")
        assert set(m.iter_session_ids()) == {a, b}
        assert list(m.iter_user_ids()) == ["alice"]
        doc = m.export_session_data(a, user_id="alice")
        assert m.export_session(a).session.session_id == a
        with pytest.raises(PermissionDenied):
            m.merge_sessions(a, b, user_id="bob")
        assert m.merge_sessions(a, b, user_id="alice").total_interactions == 3
        m.delete_session(a)
        doc["session"]["session_id"] = "imported"
        assert m.import_session_data(doc) == "imported"
        assert m.cleanup_expired_sessions(dry_run=True) == 0
        assert m.cleanup().session_ids == []
        assert m.stats().sessions == 1
        # The event stream's readers: a page, a wait, a consumer's cursor and dead letter.
        page = m.events(limit=1000)
        assert page.events
        assert m.wait_for_events(page.after, block=0.05).events == []
        assert m.ack_event("hook", page.events[0].id, failed={"error": "HTTP 500"})
        assert m.event_cursor("hook") == page.events[0].id
        assert m.stats().webhook_dead_letters == 1
        m.repair_indexes()
        # The worker's pieces: dumps (the dirty marks), restore, leader lock.
        assert m.dump_sessions(tmp_path).written >= 1
        assert dirty_ids(m) == []
        m.delete_session("imported")
        m.restore_sessions(tmp_path)
        # The SQL mirror: a full copy, then a run from the stream.
        db = Database(f"sqlite:///{tmp_path / 'mirror.sqlite3'}")
        db.open()
        c = m.create_session("alice").session_id
        assert m.mirror_sql(db).full_copy
        m.log_interaction(c, user_message="mirrored")
        assert m.mirror_sql(db).upserted == 1
        db.close()
        lock = LeaderLock(m.client, m.keys, lease=5.0)
        assert lock.acquire()
        assert lock.renew()
        assert lock.holder_ttl() > 0
        assert lock.release()
    # Encryption at rest and rotate-keys under the same rule.
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with SessionManager.from_url(_app_url(server), encryption_keys=[old_key]) as m:
        sid = m.create_session("carol", context={"secret": 1}).session_id
        m.log_interaction(sid, user_message="sealed")
        m.set_preferences("carol", {"p": 1})
    with SessionManager.from_url(_app_url(server), encryption_keys=[new_key, old_key]) as m:
        assert m.rotate_keys().sessions_rotated >= 1
        assert m.rotate_keys().sessions_rotated == 0
    # Everything the user wrote lives under its prefix.
    assert all(k.startswith(b"redsession:") for k in admin.scan_iter())


def test_acl_user_cannot_reach_keys_outside_its_prefix(
    acl_server: tuple[RedisServer, redis.Redis],
) -> None:
    server, admin = acl_server
    admin.set("other-app:secret", "x")
    with SessionManager.from_url(_app_url(server), key_prefix="other-app") as m:
        with pytest.raises(StorageError, match="no permissions") as info:
            m.create_session("alice")
        assert not isinstance(info.value, StorageUnavailable)  # a refusal, not an outage
    app = redis.Redis.from_url(_app_url(server))
    with pytest.raises(redis.exceptions.NoPermissionError):
        app.get("other-app:secret")
    with pytest.raises(redis.exceptions.NoPermissionError):
        app.flushall()
    app.close()
    assert Keys("other-app").prefix == "other-app"


def test_acl_user_wrong_password_is_refused(acl_server: tuple[RedisServer, redis.Redis]) -> None:
    server, _ = acl_server
    with (
        SessionManager.from_url(_app_url(server, pw="nope")) as m,
        pytest.raises(StorageUnavailable, match="invalid username-password pair"),
    ):
        m.list_active_sessions()


# -- TLS -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer or (name, key)
    now = dt.datetime.now(dt.timezone.utc)
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        b = b.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if usage:
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    d = tmp_path_factory.mktemp("certs")
    pem = serialization.Encoding.PEM
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("redsession test CA", ca_key, None, ca=True)
    issuer = (ca.subject, ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName("localhost")]  # not 127.0.0.1: see below
    server = _cert(
        "localhost", server_key, issuer, sans=sans, usage=ExtendedKeyUsageOID.SERVER_AUTH
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _cert("app", client_key, issuer, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = _cert("someone else's CA", other_key, None, ca=True)
    return Certs(
        ca=_write(d / "ca.crt", ca.public_bytes(pem)),
        server_cert=_write(d / "server.crt", server.public_bytes(pem)),
        server_key=_write(d / "server.key", _key_pem(server_key)),
        client_cert=_write(d / "client.crt", client.public_bytes(pem)),
        client_key=_write(d / "client.key", _key_pem(client_key)),
        other_ca=_write(d / "other-ca.crt", other.public_bytes(pem)),
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tls_server(server_factory: ServerFactory, certs: Certs, *, mutual: bool) -> int:
    """Start a server with a TLS port (besides its plain loopback one); returns the TLS port."""
    for _ in range(3):  # the port we picked may be taken before the server binds it
        port = _free_port()
        args = [
            "--tls-port", str(port),
            "--tls-cert-file", str(certs.server_cert),
            "--tls-key-file", str(certs.server_key),
            "--tls-ca-cert-file", str(certs.ca),
            "--tls-auth-clients", "yes" if mutual else "no",
        ]  # fmt: skip
        try:
            server_factory(extra_args=args)
        except ServerError as e:
            if "tls" in str(e).lower() and "not supported" in str(e).lower():
                pytest.skip("this server binary was built without TLS")
            if "in use" not in str(e):
                raise
            continue
        return port
    pytest.fail("no free port for TLS in 3 attempts")


def _tls_manager(port: int, host: str = "localhost", **settings: object) -> SessionManager:
    return SessionManager.from_url(f"rediss://{host}:{port}/0", socket_timeout=3, **settings)


def test_tls_with_ca_verification_works(server_factory: ServerFactory, certs: Certs) -> None:
    port = _tls_server(server_factory, certs, mutual=False)
    with _tls_manager(port, tls_ca_certs=certs.ca) as m:
        sid = m.create_session("alice").session_id
        m.log_interaction(sid, user_message="over TLS")
        assert m.get_session(sid).total_interactions == 1


async def test_tls_async_manager(server_factory: ServerFactory, certs: Certs) -> None:
    from redsession import AsyncSessionManager

    port = _tls_server(server_factory, certs, mutual=False)
    m = AsyncSessionManager.from_url(f"rediss://localhost:{port}/0", tls_ca_certs=certs.ca)
    try:
        sid = (await m.create_session("alice")).session_id
        assert (await m.resume_session(sid, "alice")).session_id == sid
    finally:
        await m.close()


@pytest.mark.parametrize("ca", ["none", "other"])
def test_tls_client_without_the_ca_is_refused_cleanly(
    server_factory: ServerFactory, certs: Certs, ca: str
) -> None:
    port = _tls_server(server_factory, certs, mutual=False)
    settings = {} if ca == "none" else {"tls_ca_certs": certs.other_ca}
    with (
        _tls_manager(port, **settings) as m,
        pytest.raises(StorageUnavailable, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        m.create_session("alice")


def test_tls_hostname_is_checked(server_factory: ServerFactory, certs: Certs) -> None:
    port = _tls_server(server_factory, certs, mutual=False)
    # The same server, reached by an address its certificate does not name.
    with (
        _tls_manager(port, "127.0.0.1", tls_ca_certs=certs.ca) as m,
        pytest.raises(StorageUnavailable, match=r"IP address mismatch"),
    ):
        m.create_session("alice")
    with _tls_manager(port, "127.0.0.1", tls_ca_certs=certs.ca, tls_check_hostname=False) as m:
        m.create_session("alice")


def test_mutual_tls_needs_the_client_certificate(
    server_factory: ServerFactory, certs: Certs
) -> None:
    port = _tls_server(server_factory, certs, mutual=True)
    mtls = {"tls_ca_certs": certs.ca, "tls_certfile": certs.client_cert}
    with _tls_manager(port, **mtls, tls_keyfile=certs.client_key) as m:
        sid = m.create_session("alice").session_id
        assert m.resume_session(sid, "alice").session_id == sid
    # The server drops a handshake without a certificate: to the client, a reset connection.
    no_cert = _tls_manager(port, tls_ca_certs=certs.ca, retry_deadline=0.5)
    with no_cert as m, pytest.raises(StorageUnavailable):
        m.create_session("alice")


def test_tls_settings_are_checked_up_front(certs: Certs, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tls_certfile and tls_keyfile"):
        _tls_manager(1, tls_certfile=certs.client_cert)
    with pytest.raises(ConfigError, match=r"tls_ca_certs: .* is not a file"):
        _tls_manager(1, tls_ca_certs=tmp_path / "missing.crt")
    # Plain redis:// ignores the TLS settings rather than failing on them.
    m = SessionManager.from_url("redis://127.0.0.1:1/0", tls_ca_certs=tmp_path / "missing.crt")
    m.close()
