"""RedsessionSaver against LangGraph's own conformance suite (the PyPI package
langgraph-checkpoint-conformance), and what that suite does not check: the keys a thread
owns, their TTL and slot, exports, dumps and restores, encryption, and O(1) writes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.report import ProgressCallbacks

from redsession import AsyncSessionManager
from redsession.integrations.langgraph import RedsessionSaver

# The optional capabilities RedsessionSaver implements: their extended tests must pass too.
IMPLEMENTED = {"copy_thread"}


@pytest.fixture
async def manager(url: str) -> AsyncIterator[AsyncSessionManager]:
    m = AsyncSessionManager.from_url(url)
    yield m
    await m.close()


async def test_conformance(manager: AsyncSessionManager) -> None:
    @checkpointer_test(name="RedsessionSaver")
    async def saver() -> AsyncIterator[RedsessionSaver]:
        yield RedsessionSaver(manager)

    failures: list[str] = []

    def result(capability: str, test: str, passed: bool, error: str | None) -> None:
        if not passed:
            failures.append(f"{capability}/{test}: {error}")

    report = await validate(saver, progress=ProgressCallbacks(on_test_result=result))
    report.print_report()
    assert failures == []
    assert report.passed_all_base()
    ran: dict[str, Any] = {name: r for name, r in report.results.items() if r.detected}
    for name in IMPLEMENTED:
        assert ran[name].passed is True, name
        assert ran[name].tests_passed > 0, name
    assert report.passed_all()
