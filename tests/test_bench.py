"""The benchmark harness still runs: a smoke run with tiny counts produces every table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(200)  # every section, the REST API's included, with tiny counts
def test_smoke_run_reports_every_operation(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    docs = ROOT / "docs" / "benchmarks.md"
    before = docs.stat().st_mtime_ns if docs.exists() else None
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=170,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    tables = [b for b in proc.stdout.split("\n\n") if b.startswith("Operations — ")]
    assert [t.splitlines()[0].split(" — ")[1].split(",")[0].split(" (")[0] for t in tables] == [
        "sync", "asyncio", "2 processes"
    ]  # fmt: skip
    for table in tables:
        for op in ("log_interaction", "resume", "list_active_sessions", "export"):
            for impl in ("redsession", "hand-rolled (limit)"):
                rows = [r.split() for r in table.splitlines()]
                assert any(r[0] == op and " ".join(r[1:-5]) == impl for r in rows if r), (op, impl)
    for title in (
        "Growth — log_interaction",
        "Growth — resume",
        "Dump and cleanup",
        "SQL mirror run",
        "Memory",
        "REST API under load",
        "Analytics — what they cost",
        "Framework backends — OpenAI Agents SDK",
        "Framework backends — Google ADK",
    ):
        assert title in proc.stdout
    assert "hand-rolled (limit)" in proc.stdout
    assert "x plain client" in proc.stdout
    text = out.read_text()
    assert "| log_interaction | redsession |" in text
    assert "**server**" in text
    # A smoke run never overwrites the real report.
    assert (docs.stat().st_mtime_ns if docs.exists() else None) == before


def test_the_instruction_targets_read_from_the_counts() -> None:
    from bench.report import instruction_table

    counts = {
        "redsession": {"log_interaction": 300, "resume": 151},
        "hand-rolled": {"log_interaction": 200, "resume": 100},
        "hand-rolled, plain client": {"log_interaction": 190, "resume": 95},
    }
    table, lines = instruction_table(counts, 1.5)
    assert lines == [
        "client CPU: log_interaction at 1.500x the hand-rolled store's instructions — "
        "meets the at-most-1.5x target",
        "client CPU: resume at 1.510x the hand-rolled store's instructions — "
        "MISSES the at-most-1.5x target",
    ]
    assert ["resume", "hand-rolled, plain client", "95", "0.950"] in table.rows


@pytest.mark.timeout(60)
def test_canned_replies_replay_for_every_operation(tmp_path: Path) -> None:
    """What bench.canned counts under callgrind runs, and parses the recorded replies (redis-py
    8.2 took a reply queued before the command for stale data, and every count failed)."""
    import json

    from bench import canned
    from bench.harness import server
    from bench.ops import HISTORY
    from redsession import Interaction, Session

    replies = tmp_path / "replies.json"
    with server() as srv:
        replies.write_text(json.dumps(canned.record(srv.url)))
    for impl in canned.IMPLS:
        for op in canned.OPS:
            result = canned.run(impl, op, 3, replies, warmup=2)
            if impl != "redsession":
                assert result, (impl, op)
            elif op == "resume":
                assert isinstance(result, Session)
                assert len(result.history) == HISTORY
            else:
                assert isinstance(result, Interaction)


def test_the_instruction_check_gates_the_ratio(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--check fails when redsession's count grows against the hand-rolled store's, not when a
    new redis-py or Python moves both."""
    import json

    from bench import canned

    base = {"redsession": {"log_interaction": 300, "resume": 800},
            "hand-rolled": {"log_interaction": 250, "resume": 560}}  # fmt: skip
    baseline = tmp_path / "instructions.json"
    baseline.write_text(json.dumps({"measured with": canned.versions(), "counts": base}))
    monkeypatch.setattr(canned, "BASELINE", baseline)

    def check(rs: float, hr: float) -> int:
        counts = {impl: {op: int(n * (rs if impl == "redsession" else hr)) for op, n in c.items()}
                  for impl, c in base.items()}  # fmt: skip
        monkeypatch.setattr(canned, "measure", lambda impls: counts)
        return canned.main(["--check"])

    assert check(1.0, 1.0) == 0
    assert check(1.3, 1.3) == 0  # a dependency that costs every client the same
    assert check(1.09, 1.0) == 0
    assert check(1.12, 1.0) == 1  # redsession alone, past the 10%
    assert check(1.0, 0.88) == 1  # the same ratio, reached the other way
