"""The asyncio driver this run of the suite tests (REDSESSION_ASYNC_DRIVER; `make test-glide`
runs the asyncio tests again on valkey-glide)."""

from __future__ import annotations

import pytest

from redsession import Settings

GLIDE = Settings().async_driver == "valkey-glide"

# valkey-glide serves one event loop at a time (storage/glide.py); redis-py's use from several
# live loops at once is tested in the main run.
several_loops_at_once = pytest.mark.skipif(
    GLIDE, reason="valkey-glide serves one event loop at a time; the redis-py run tests this"
)
