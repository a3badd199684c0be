"""Webhooks: the worker's leader POSTs every event of the stream to each configured URL.

Each URL has a thread of its own while this worker leads, so a slow or failing receiver
holds up only itself. A URL gets the events in stream order, each at least once: POSTed as
JSON (the Event model), signed with HMAC-SHA256 over the exact body
(``X-Redsession-Signature: sha256=<hex>``), retried with backoff up to
Settings.webhook_attempts tries, and then, if it never succeeded, kept as a dead letter
(counted in stats). After each event the URL's cursor in Redis moves on (the stream's
consumer cursor: SessionManager.ack_event), so a restarted worker, or the next leader after
a failover, resumes after the last event done. A new URL starts from the oldest event the
stream still holds. An event may arrive twice (a crash between the POST and the cursor
move, an old leader finishing a try): receivers deduplicate by ``X-Redsession-Event-Id``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
import threading
from collections.abc import Callable

import httpx2

from redsession import __version__
from redsession.config import Settings
from redsession.errors import RedsessionError
from redsession.manager import SessionManager
from redsession.model.models import Event

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Redsession-Signature"
EVENT_ID_HEADER = "X-Redsession-Event-Id"
CONSUMER_PREFIX = "webhook:"  # a URL's consumer name on the stream: this + the URL
PAGE = 100  # events read at a time
WAIT = 1.0  # seconds each read waits for new events; a stop is seen within this long
BACKOFF_CAP = 60.0  # seconds: the longest wait between two tries
# A 4xx answer says the receiver refuses this request: trying it again cannot help, unless
# it is one of these (timeout, conflict, too early, too many requests).
_RETRIED_4XX = frozenset({408, 409, 425, 429})


def sign(secret: bytes, body: bytes) -> str:
    """The signature header's value for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, signature: str | None) -> bool:
    """Whether ``signature`` (the header's value) signs ``body``: what a receiver checks."""
    return signature is not None and hmac.compare_digest(sign(secret, body), signature)


class _Stopped(Exception):
    """Delivery was asked to stop (shutdown, or this worker no longer leads)."""


class Webhook:
    """Delivers the stream to one URL, in order, until told to stop."""

    def __init__(
        self, url: str, settings: Settings, manager: SessionManager,
        live: Callable[[], bool],
    ) -> None:  # fmt: skip
        self.url = url
        self.consumer = CONSUMER_PREFIX + url
        self.manager = manager
        self._live = live
        secret = settings.webhook_secret  # Settings require one once a URL is set
        self._secret = secret.get_secret_value().encode() if secret else b""
        self._attempts = settings.webhook_attempts
        self._backoff = settings.webhook_backoff.total_seconds()
        self._timeout = settings.webhook_timeout.total_seconds()
        self._stop = threading.Event()
        self._failures = 0  # reads of the stream failed in a row

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Deliver until stop() or ``live()`` turns false; Redis outages are waited out."""
        with httpx2.Client(timeout=self._timeout, follow_redirects=False) as http:
            try:
                while self._running():
                    try:
                        self._deliver_from(http, self.manager.event_cursor(self.consumer))
                    except RedsessionError as e:  # Redis unreachable past the retry deadline
                        self._failures += 1
                        log.warning("webhook %s: %s; reading the stream again", self.url, e)
                        delay = self._backoff * 2.0 ** min(self._failures, 16)
                        self._pause(min(BACKOFF_CAP, delay))
            except _Stopped:
                return

    def _deliver_from(self, http: httpx2.Client, after: str | None) -> None:
        while self._running():
            page = self.manager.wait_for_events(after, limit=PAGE, block=WAIT)
            self._failures = 0
            for event in page.events:
                if not self._running():
                    raise _Stopped
                failed = self._post(http, event)
                self.manager.ack_event(self.consumer, event.id, failed=failed)
                after = event.id
            after = page.after

    def _post(self, http: httpx2.Client, event: Event) -> dict[str, str] | None:
        """POST ``event`` until it succeeds (None) or the tries run out (why, as the dead
        letter's fields). Raises _Stopped when asked to stop meanwhile."""
        body = event.model_dump_json().encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"redsession/{__version__}",
            SIGNATURE_HEADER: sign(self._secret, body),
            EVENT_ID_HEADER: event.id,
        }
        error, attempt = "", 0
        while attempt < self._attempts:
            attempt += 1
            try:
                r = http.post(self.url, content=body, headers=headers)
            except httpx2.HTTPError as e:  # refused, reset, timed out, ...
                error = f"{type(e).__name__}: {e}"
            else:
                if r.is_success:
                    return None
                error = f"HTTP {r.status_code}"
                if r.is_client_error and r.status_code not in _RETRIED_4XX:
                    break
            if attempt < self._attempts:
                self._pause(min(BACKOFF_CAP, self._backoff * 2.0 ** (attempt - 1)))
        log.warning("webhook %s: event %s is a dead letter after %d tries: %s",
                    self.url, event.id, attempt, error)  # fmt: skip
        return {"error": error, "attempts": str(attempt), "event": event.id, "kind": event.kind,
                "sid": event.session_id, "uid": event.user_id, "op": event.op_id}  # fmt: skip

    def _running(self) -> bool:
        return not self._stop.is_set() and self._live()

    def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` (jittered down to half), unless asked to stop meanwhile."""
        if self._stop.wait(random.uniform(seconds / 2, seconds)) or not self._live():
            raise _Stopped


class WebhookDelivery:
    """A Webhook thread per configured URL, started when the worker leads, stopped when it
    stops leading. ``live`` says whether this worker still leads (its lease, by its clock)."""

    def __init__(
        self, settings: Settings, manager: SessionManager, live: Callable[[], bool]
    ) -> None:
        self.settings = settings
        self.manager = manager
        self._live = live
        self._running: list[tuple[Webhook, threading.Thread]] = []

    def start(self) -> None:
        """Start delivering (again: from each URL's cursor in Redis)."""
        if self._running:
            return
        for i, url in enumerate(self.settings.webhook_urls):
            hook = Webhook(url, self.settings, self.manager, self._live)
            thread = threading.Thread(target=hook.run, name=f"webhook-{i}", daemon=True)
            thread.start()
            self._running.append((hook, thread))
        if self._running:
            log.info("delivering events to %d webhook(s)", len(self._running))

    def stop(self, wait: float = 0.0) -> None:
        """Stop every URL's thread; wait up to ``wait`` seconds for each to end (a POST in
        flight ends within webhook_timeout, and its event is delivered again later)."""
        running, self._running = self._running, []
        for hook, _ in running:
            hook.stop()
        for _, thread in running:
            thread.join(wait)
