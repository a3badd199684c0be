"""The deployment's health as the services report it: Redis reachable, the worker leader's
heartbeat, and the last run of each worker job."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from redsession.core.base import Core
from redsession.errors import InvalidInput
from redsession.model import validation as check
from redsession.model.models import JobRun, Overview, WorkerStatus
from redsession.storage.commands import Op
from redsession.storage.status import StatusStore

log = logging.getLogger(__name__)
DAY_US = 86_400_000_000  # µs


def ping(core: Core) -> Op[None]:
    """Returns once every primary answers (StorageUnavailable when one does not)."""
    yield from StatusStore(core.store.keys).ping()


def record_job(core: Core, run: JobRun) -> Op[None]:
    if not isinstance(run, JobRun):
        raise InvalidInput(f"run must be a JobRun, not {check.show(run)}")
    yield from StatusStore(core.store.keys).record_job(run.job, run.model_dump(mode="json"))


def worker_status(core: Core) -> Op[WorkerStatus]:
    beat, runs = yield from StatusStore(core.store.keys).read()
    jobs = {}
    for name, run in runs.items():
        try:
            jobs[name] = JobRun.model_validate(run)
        except ValidationError:
            log.warning("unreadable record of worker job %r: %r", name, run)
    leader: dict[str, Any] = {}
    if beat is not None:
        leader = {
            "leader": beat.get("token"), "host": beat.get("host"), "pid": beat.get("pid"),
            "heartbeat_at": beat.get("at"),
        }  # fmt: skip
    try:
        return WorkerStatus(**leader, jobs=jobs)
    except ValidationError:
        log.warning("unreadable worker heartbeat %r", beat)
        return WorkerStatus(jobs=jobs)


def overview(core: Core) -> Op[Overview]:
    """Counts from the indexes' cardinalities, memory from INFO: no walk over the sessions."""
    n_s, n_u, _, _, memory = yield from core.store.counts()
    now = core.now()
    expiring = yield from core.store.upkeep.count_expiring(now, now + DAY_US)
    worker = yield from worker_status(core)
    return Overview(
        sessions=n_s, users=n_u, redis_used_memory=memory, expiring_24h=expiring, worker=worker
    )
