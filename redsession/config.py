"""Settings: one object, read from keyword arguments, then REDSESSION_* environment variables."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MiB = 1024 * 1024


class Settings(BaseSettings):
    """Every tunable of redsession. Environment: REDSESSION_<FIELD>, e.g. REDSESSION_REDIS_URL."""

    model_config = SettingsConfigDict(env_prefix="REDSESSION_", frozen=True, extra="forbid")

    # None means "no external Redis": `redsession up` then starts the embedded server.
    redis_url: str | None = None
    # Namespaces every key, so several deployments can share one Redis.
    key_prefix: str = "redsession"
    # Sliding: every write and every resume pushes expiry this far into the future.
    session_ttl: timedelta = Field(default=timedelta(days=7), gt=timedelta(0))
    # Preferences outlive any one session; they expire this long after the user's last activity.
    preferences_ttl: timedelta = Field(default=timedelta(days=30), gt=timedelta(0))
    # Dumps, quarantine, backups and the embedded server's AOF/RDB all live below here.
    data_dir: Path = Path("data")

    # A call fails with StorageUnavailable after about this long instead of hanging.
    socket_timeout: float = Field(default=5.0, gt=0)
    # Connecting is separate from answering: a dead host should fail fast.
    connect_timeout: float = Field(default=2.0, gt=0)
    # Connections per client pool; callers beyond it wait (up to socket_timeout) for one.
    max_connections: int = Field(default=64, gt=0)
    # The asyncio manager's client: redis-py (pooled connections; every topology), or
    # valkey-glide (the glide extra: one multiplexed connection per server, faster under
    # many concurrent tasks; one server or a cluster, no Sentinel, no write_replicas).
    async_driver: Literal["redis-py", "valkey-glide"] = "redis-py"

    # rediss:// only. A private CA's bundle: servers with self-signed or internal certificates.
    tls_ca_certs: Path | None = None
    # Client certificate and its key, for servers that require mutual TLS (tls-auth-clients).
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    # Off only for servers announced by IP that their certificate does not name (Sentinel).
    tls_check_hostname: bool = True

    # One message (user or assistant) at most this many UTF-8 bytes: bounds Redis memory per call.
    max_message_bytes: int = Field(default=MiB, gt=0)
    # A session's context (and a user's preferences) encoded as JSON, at most.
    max_context_bytes: int = Field(default=MiB, gt=0)
    # Distinct topics per session; topics are merged in the write script, so keep it bounded.
    max_topics: int = Field(default=256, gt=0)
    # Nesting depth of context, preferences and metadata; deep nesting is a parser attack.
    max_json_depth: int = Field(default=32, gt=0)
    # One checkpoint value (a framework's checkpoint, a channel's blob, a pending write) at
    # most: a blob holds a whole channel value, such as a long thread's message list.
    max_checkpoint_bytes: int = Field(default=64 * MiB, gt=0)
    # Framework items per append_items / replace_history call: bounds one script's arguments.
    max_append_items: int = Field(default=10_000, gt=0)
    # App instances' clocks may disagree by this much: reads of the entries after a time
    # look this far further back, so an entry stamped by a slow clock is not missed.
    clock_skew: timedelta = Field(default=timedelta(seconds=5), ge=timedelta(0))
    # How many recent interactions resume_session returns with the session.
    resume_history: int = Field(default=20, ge=0)
    # Optimistic context updates retry this often under contention before giving up.
    max_update_retries: int = Field(default=50, gt=0)

    # A call that meets a connection error, a timeout or a failover reply is sent again (with
    # backoff) until this long has passed; 0 turns retries off. Writes carry operation ids,
    # so a retried write whose first reply was lost is not applied twice. Long enough to
    # ride out a Sentinel failover or a Redis restart.
    retry_deadline: timedelta = Field(default=timedelta(seconds=15), ge=timedelta(0))
    # A write is acknowledged only once this many replicas have it (WAIT, pipelined with the
    # write), so a failover to one of them cannot lose it; a write the replicas do not
    # confirm within replica_timeout is sent again (deduplicated), then StorageUnavailable at
    # retry_deadline. 0: acknowledged when the master applied it. One server or Sentinel.
    write_replicas: int = Field(default=0, ge=0)
    replica_timeout: timedelta = Field(default=timedelta(seconds=1), gt=timedelta(0))
    # A session remembers the operation ids (and first replies) of its writes this long (or
    # its last 128 writes, if more came in that time: storage/scripts.py once()), so a retry
    # arriving later than this may apply again. Longer than any retry_deadline.
    op_window: timedelta = Field(default=timedelta(minutes=10), gt=timedelta(0))
    # The event stream keeps about this many events (XADD MAXLEN ~); 0: write no events.
    events_maxlen: int = Field(default=100_000, ge=0)
    # Resumes are frequent and rarely audited: their events are off unless asked for.
    events_resume: bool = False

    # The worker's leader POSTs every event to each of these URLs (env: comma-separated),
    # at least once, as JSON signed with webhook_secret; none by default.
    webhook_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # The HMAC-SHA256 key of each delivery's X-Redsession-Signature; required with URLs.
    webhook_secret: SecretStr | None = None
    # A receiver that has not answered in this long has failed that try.
    webhook_timeout: timedelta = Field(default=timedelta(seconds=10), gt=timedelta(0))
    # Tries per event before it becomes a dead letter (stats counts them; nothing is lost
    # silently). With the backoff below, 8 tries span about two minutes.
    webhook_attempts: int = Field(default=8, ge=1, le=100)
    # The wait before the first retry; each next one doubles (jittered), up to a minute.
    webhook_backoff: timedelta = Field(default=timedelta(seconds=1), gt=timedelta(0))

    # Fernet keys, newest first (env: comma-separated). Set: content is encrypted at rest;
    # the first key encrypts, all decrypt, so a new key can be rolled out before rotate-keys.
    encryption_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)

    # The embedded server's fsync policy: "always" loses nothing on kill -9, "everysec" ~1 s.
    appendfsync: Literal["always", "everysec", "no"] = "everysec"
    # Which server binary the embedded server runs: auto, redis, valkey, wheel, or a path.
    server_bin: str | None = None
    # The embedded server's port; 0 picks a free loopback port.
    server_port: int = Field(default=0, ge=0, le=65535)

    # Worker: how often each job runs. Dumps bound what a lost Redis can take with it.
    dump_interval: timedelta = Field(default=timedelta(seconds=60), gt=timedelta(0))
    # Cleanup only trims indexes and files (Redis expires the data itself): no rush.
    cleanup_interval: timedelta = Field(default=timedelta(minutes=5), gt=timedelta(0))
    # One archive a day is the usual restore-point granularity for conversation data.
    backup_interval: timedelta = Field(default=timedelta(days=1), gt=timedelta(0))
    # Keep the newest N archives...
    backup_keep: int = Field(default=7, ge=1)
    # ...and none older than this, whatever N says.
    backup_max_age: timedelta = Field(default=timedelta(days=14), gt=timedelta(0))
    # Random delay added to each run, so workers on many hosts do not fire together.
    job_jitter: timedelta = Field(default=timedelta(seconds=5), ge=timedelta(0))
    # A dead leader is replaced within this lease.
    worker_lease: timedelta = Field(default=timedelta(seconds=30), gt=timedelta(0))
    # The leader renews its lease and heartbeat this often (well inside the lease).
    heartbeat_interval: timedelta = Field(default=timedelta(seconds=10), gt=timedelta(0))

    # The SQL mirror (redsession/mirror/): the worker copies changed sessions into SQL for
    # analysis. None: SQLite at <data_dir>/sessions.sqlite3, no server for a newcomer.
    sql_url: str | None = None
    # Off: the worker runs no mirror job (and needs no SQL database).
    sql_mirror: bool = True
    # How often the mirror runs; a change reaches SQL within about one period.
    sql_interval: timedelta = Field(default=timedelta(seconds=60), gt=timedelta(0))
    # Off: no message text (messages, answers, metadata, items) is copied at all.
    sql_text: bool = True
    # On: encrypted fields are copied decrypted, for a database the operator trusts.
    sql_plaintext: bool = False
    # On: expired sessions stay in SQL, marked expired; off: they are removed like deletes.
    sql_keep_expired: bool = False

    # MCP over HTTP binds loopback unless told otherwise: conversation data is personal.
    mcp_host: str = "127.0.0.1"
    mcp_port: int = Field(default=8765, ge=0, le=65535)
    # When set, HTTP requests must carry "Authorization: Bearer <token>".
    mcp_token: SecretStr | None = None
    # JSON object of more bearer tokens -> the user id each may act for ("*": admin).
    mcp_tokens_file: Path | None = None

    # The REST API and dashboard (`redsession api`) bind loopback too; they take the MCP
    # tokens above (one set of identities for every HTTP service).
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8780, ge=0, le=65535)
    # The worker serves Prometheus /metrics on this loopback port; 0: it serves none.
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)
    # The worker folds new events into the per-day analytics this often (the dashboard's
    # charts are this stale at most).
    rollup_interval: timedelta = Field(default=timedelta(seconds=60), gt=timedelta(0))

    @field_validator("*", mode="before")
    @classmethod
    def _seconds(cls, value: Any, info: ValidationInfo) -> Any:
        # The environment gives strings: for a duration a plain number is seconds, as
        # documented (pydantic reads only ISO 8601 durations, "PT60S", from a string).
        field = cls.model_fields[info.field_name or ""]
        if isinstance(value, str) and field.annotation is timedelta:
            try:
                return float(value)
            except ValueError:
                return value
        return value

    @model_validator(mode="after")
    def _retries_within_op_window(self) -> Settings:
        # A retry sent after its operation id was forgotten would apply the write twice.
        if self.retry_deadline >= self.op_window:
            raise ValueError("retry_deadline must be shorter than op_window")
        return self

    @field_validator("encryption_keys", "webhook_urls", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("webhook_urls")
    @classmethod
    def _http_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            scheme, sep, rest = url.partition("://")
            if scheme.lower() not in ("http", "https") or not sep or not rest.strip("/"):
                raise ValueError(f"webhook URL {url!r} must be http:// or https:// and name a host")
        if len(set(urls)) != len(urls):
            raise ValueError("a webhook URL is listed twice")
        return urls

    @model_validator(mode="after")
    def _webhooks_are_signed(self) -> Settings:
        # An unsigned delivery cannot be told from a forged one.
        secret = self.webhook_secret.get_secret_value() if self.webhook_secret else ""
        if self.webhook_urls and not secret:
            raise ValueError("webhook_urls need a webhook_secret to sign each delivery")
        return self
