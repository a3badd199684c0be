"""What the services read to say how the deployment is doing: the worker leader's heartbeat
and the last run of each worker job, as the worker records them.

The heartbeat is written by services/leader.py (with its lock); the job records are written
here, so that the sync worker and the asyncio API read and write them with the same commands.
"""

from __future__ import annotations

from typing import Any

import orjson

from redsession.storage.commands import Batch, OnEachPrimary, Op, hash_reply
from redsession.storage.keys import Keys


class StatusStore:
    """Commands over the worker's status keys (one key each: any cluster slot is fine)."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys

    def record_job(self, name: str, run: dict[str, Any]) -> Op[None]:
        """Keep ``run`` (JSON-able) as the last run of job ``name``."""
        yield Batch((("HSET", self.keys.worker_jobs, name, orjson.dumps(run)),))

    def read(self) -> Op[tuple[dict[str, Any] | None, dict[str, dict[str, Any]]]]:
        """(the leader's heartbeat or None, job name -> its last run); unreadable ones left out."""
        beat, jobs = yield Batch((
            ("GET", self.keys.worker_heartbeat),
            ("HGETALL", self.keys.worker_jobs),
        ))  # fmt: skip
        runs = {}
        for name, raw in hash_reply(jobs).items():
            run = _json_object(raw)
            if run is not None:
                runs[name] = run
        return (None if beat is None else _json_object(beat)), runs

    def ping(self) -> Op[None]:
        """Answers when every primary does; the driver raises StorageUnavailable otherwise."""
        yield OnEachPrimary(("PING",))


def _json_object(raw: bytes | str) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None  # someone else's bytes in our key: report no record rather than fail
    return doc if isinstance(doc, dict) else None
