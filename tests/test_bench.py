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
