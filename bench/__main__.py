"""``python -m bench``: run the benchmarks, print tables, write docs/benchmarks.md.

``--smoke`` runs everything with tiny counts (seconds, for CI) and writes the report only
where ``--out`` says, never over docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

from bench import harness, report, suite
from bench.harness import FULL, SMOKE
from bench.ops import OPS

SECTIONS = (
    "ops", "instructions", "server", "growth", "dump", "mirror", "memory", "writes", "api",
    "frameworks", "checkpoints",
)
DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--smoke", action="store_true", help="tiny counts: checks the harness works")
    p.add_argument("--section", action="append", choices=SECTIONS,
                   help="run only these sections (repeatable); the default is all")  # fmt: skip
    p.add_argument("--setup", action="append", choices=suite.SETUPS,
                   help="operations benchmark: only these setups (repeatable)")  # fmt: skip
    p.add_argument("--op", action="append", choices=list(OPS),
                   help="operations benchmark: only these operations (repeatable)")  # fmt: skip
    p.add_argument(
        "--impl", action="append", help="operations benchmark: only impls whose name has this"
    )
    p.add_argument("--rounds", type=int, help="override the number of interleaved rounds")
    p.add_argument("--duration", type=float, help="override the seconds per measurement")
    p.add_argument("--out", type=Path,
                   help="write the markdown report here (default: docs/benchmarks.md on a "
                        "complete full run, nowhere otherwise)")  # fmt: skip
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")  # fmt: skip

    budget = SMOKE if args.smoke else FULL
    if args.rounds or args.duration:
        budget = harness.Budget(
            duration=args.duration or budget.duration, rounds=args.rounds or budget.rounds,
            warmup=budget.warmup, processes=budget.processes, concurrency=budget.concurrency,
        )  # fmt: skip
    # A smoke run leaves out the instruction counts (minutes of valgrind; CI runs the
    # client's as `make bench-instructions`) unless asked for.
    valgrind = ("instructions", "server")
    default = tuple(x for x in SECTIONS if x not in valgrind) if args.smoke else SECTIONS
    sections = tuple(args.section or default)
    setups = tuple(args.setup or suite.SETUPS)
    ops = tuple(args.op or OPS)
    complete = (
        not args.smoke
        and not args.impl
        and sections == SECTIONS
        and setups == suite.SETUPS
        and ops == OPS
    )
    out = args.out or (DOCS if complete else None)

    started = time.monotonic()
    machine = harness.machine()
    tables: list[report.Table] = []
    targets: list[str] = []
    with harness.server() as srv:
        if "ops" in sections:
            size = (8, 20) if args.smoke else (200, 1000)
            ds = suite.build_dataset(srv.url, *size)
            impls = [
                c for c in suite.impl_classes()
                if not args.impl or any(x in c.name for x in args.impl)
            ]  # fmt: skip
            res = suite.run_ops(ds, budget, setups, ops, impls)
            tables += report.ops_tables(res, budget)
            targets += report.target_lines(res)
            for name, why in res.skipped.items():
                tables[-1].notes.append(f"{name} skipped: {why}")
        if "instructions" in sections:
            from bench import canned

            if shutil.which("valgrind") is None:
                targets.append("client CPU: not counted (valgrind is not installed)")
            else:
                counts = canned.measure()
                table, lines = report.instruction_table(counts, canned.LIMIT)
                tables.append(table)
                targets += lines
        if "server" in sections:
            from bench import server

            if shutil.which("valgrind") is None:
                targets.append("server CPU: not counted (valgrind is not installed)")
            else:
                tables.append(server.table(server.measure()))
        if "growth" in sections:
            from bench import growth

            tables += growth.history_growth(srv.url, smoke=args.smoke, rounds=budget.rounds)
        if "dump" in sections:
            from bench import growth

            tables += growth.dump_cleanup(srv.url, smoke=args.smoke)
        if "mirror" in sections:
            from bench import mirror

            tables += mirror.mirror_cost(srv.url, smoke=args.smoke)
        if "memory" in sections:
            from bench import memory

            tables += memory.memory(srv.url, smoke=args.smoke)
            tables += memory.stream(srv.url, smoke=args.smoke)
        if "checkpoints" in sections:
            from bench import checkpoints

            tables += checkpoints.checkpoints(srv.url, smoke=args.smoke, budget=budget)
        if "writes" in sections:
            from bench import writes

            tables += writes.writes(srv.url, smoke=args.smoke, rounds=budget.rounds)
        if "api" in sections:
            from bench import api

            tables += api.api(srv.url, budget=budget)
        if "frameworks" in sections:
            from bench import frameworks

            # Each backend on a fresh server of its own, not on srv.
            tables += frameworks.frameworks(smoke=args.smoke, budget=budget)

    for t in tables:
        print(t.text(), end="\n\n")
    for line in targets:
        print(line)
    print(f"bench finished in {time.monotonic() - started:.1f} s")
    if out is not None:
        from bench.notes import OPTIMISATIONS, PREAMBLE

        report.write_markdown(out, machine, budget, tables, targets, PREAMBLE, OPTIMISATIONS)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
