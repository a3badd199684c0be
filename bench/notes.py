"""The hand-written part of docs/benchmarks.md: method, peers, and the optimisation log."""

from __future__ import annotations

PREAMBLE = """
TODO
"""
