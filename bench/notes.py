"""The hand-written part of docs/benchmarks.md: method, peers, and the optimisation log."""

# Markdown tables cannot wrap.
# ruff: noqa: E501

from __future__ import annotations

PREAMBLE = """
## Method

- The harness starts its own server (`redsession.embedded.RedisServer` in a temporary
  directory, AOF on, `appendfsync everysec`, the packaged redis.conf) and loads generated
  sessions through redsession's own import path. Each interaction is a ~150-character
  question, a ~460-character answer, three metadata fields and one topic.
- **Every figure is measured in the same run as its baseline.** Each round runs every
  implementation of an operation back to back, in a shuffled order; figures are medians over
  the rounds and each ratio is the median of the per-round ratios, so a burst of load from
  other work on the machine hits both sides of a ratio alike. Absolute ops/s on a shared
  2-core machine move by 2x from one minute to the next; the ratios are the result.
- **The raw limit** is hand-written redis-py doing the same Redis work as redsession (owner
  check, append, counters, sliding expiry of every key, the per-user, activity, users,
  expiry and dirty indexes) in one EVALSHA of a minimal Lua script, with no validation and
  plain dicts out (records decoded with orjson). It is what a careful hand-rolled store
  could do; the target is redsession >= 0.85x of it on log_interaction and resume.
- Setups: one synchronous client; asyncio with 64 concurrent tasks on one event loop
  (`AsyncSessionManager`); 4 processes with a synchronous client each (the aggregate
  rate; latencies pooled). The server shares the machine's 2 cores with the clients.
- `redsession, no hiredis` is redsession with redis-py's pure-Python reply parser:
  whether the hiredis dependency pays.

## Peers

- **JSON blob RMW** — the design of flask-session, connect-redis, express-session and most
  web session middleware, written in bench/peers.py: the whole session is one JSON
  string; a write is GET, decode, append, encode, SET EX (two round trips, not atomic: two
  concurrent writers to one session lose an update); resume is GET plus EXPIRE (a
  "touch"). It has no index of a user's sessions, so no list_active_sessions.
- **langchain-community RedisChatMessageHistory** (from the `bench` extra; `make bench`
  installs it into `.venv-bench`): a list of messages per session; one interaction is two
  messages, each LPUSH + EXPIRE; reading returns the whole list (there is no "last N"), so
  resume is O(history). It keeps no session record, index or counters. The package warns
  that it is being sunset. The smoke run skips it when it is not installed.
- Not included: `langchain-redis` and `redisvl` message histories need the RediSearch
  module (not plain Redis); llama-index's Redis chat store brings all of llama-index-core.

The optimisation log (written by hand into bench/notes.py) is at the end of this file.
"""

OPTIMISATIONS = """
## Optimisation log (2026-11-24)

Profiled with pyinstrument and cProfile on the hot paths, then measured each change as client
CPU per operation: both variants interleaved in one process, minimum over 150-300 repetitions
(the end-to-end tables above move too much with the machine's load to resolve a few µs).

| change | measure | before | after |
|---|---|---:|---:|
| decode a history in one pydantic call (`TypeAdapter(list[Interaction])` over the joined records) instead of one call per record | decoding 20 records | 70.3 µs | 61.4 µs |
| — same | resume, client CPU without I/O | 96.5 µs | 88.1 µs |
| compute each Lua script's SHA once (`Script.sha` hashed the 2.9 KB source on every call) | log_interaction, client CPU with I/O (raw limit in the same runs: 59.9 / 59.6 µs) | 107.4 µs (raw/ours 0.56) | 95.2 µs (raw/ours 0.63) |
| list_active_sessions in one round trip on a single server (ZREVRANGE + HMGETs in one script; a cluster keeps the two steps) | throughput x raw limit, sync / asyncio 64 / 4 processes | 0.32 / 0.31 / 0.25 | 0.53 / 0.64 / 0.49 |

The list row compares two full runs, 13 minutes apart (each ratio within its own run); the
tables above are a later run's.

Measured and not done:

- A hand-written record decoder (orjson, type checks, `model_construct`) is *slower* than
  pydantic-core: `model_construct` alone costs 2.7 µs per record against 3.5 µs for the whole
  pydantic validation, and keeping pydantic's exact results needs a guard against integers
  beyond 64 bits (orjson reads them as floats), another 7 µs. Pydantic stays.
- Building `Session` with `model_construct` instead of `Session(**record.model_dump(), ...)`:
  16.1 µs against 14.4 µs; no gain.
- Skipping the cipher call per record when encryption is off: 2.7 µs per 20 records.
- The connection settings (blocking pool, socket timeout, no retries) cost within 2 µs of a
  plain redis-py client.
- hiredis pays: compare the `redsession, no hiredis` rows (pure-Python parser) above.
  orjson already does every JSON encode and decode.

Where the rest of the gap to the raw limit is (the targets are missed: see "Targets" above):

- **resume**: building 20 validated `Interaction` models costs ~60 µs of client CPU, where the
  raw limit's `orjson.loads` costs ~17 µs. models.py's `_utc` validator is declared on `"*"`,
  so it runs as a Python call for every field of every model (7 per interaction); declared
  on the datetime fields only it would save another ~6 µs per resume (52.5 against 58.7 µs
  per 20 records). Beyond that, 0.85x on resume means not returning validated models (an
  API change: e.g. decoding the history lazily, or returning plain dicts).
- **log_interaction** (sync, one client, p50 in one interleaved run: redsession 155 µs, raw
  115 µs): our session script on the wire, with the raw limit's Python side, costs +7 µs
  (PRELUDE's closures and checks); validation, id, timestamp, model and encoding cost
  +12 µs of Python (15 µs against 3 µs); the driver, the production client (blocking pool,
  socket timeout) and cache effects of the larger code path make up the other ~20 µs.
  No single part is worth more than a few per cent; together they hold log_interaction at
  0.6-0.8x of a hand-written script that validates nothing.
- **export**: a validated `SessionExport` plus `model_dump(mode="json")`, against plain
  orjson dicts: 0.35-0.45x. **list_active_sessions**: `SessionSummary` models per row.
"""
