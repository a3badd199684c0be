"""The hand-written part of docs/benchmarks.md: method, peers, and the optimisation log."""

# Markdown tables cannot wrap.
# ruff: noqa: E501

from __future__ import annotations

PREAMBLE = """
## Method

- The harness starts its own server (`redsession.services.embedded.RedisServer` in a temporary
  directory, AOF on, `appendfsync everysec`, the packaged redis.conf) and loads generated
  sessions through redsession's own import path. Each interaction is a ~150-character
  question, a ~460-character answer, three metadata fields and one topic.
- **Every figure is measured in the same run as its baseline.** Each round runs every
  implementation of an operation back to back, in a shuffled order; figures are medians over
  the rounds and each ratio is the median of the per-round ratios, so a burst of load from
  other work on the machine hits both sides of a ratio alike. Absolute ops/s on a shared
  2-core machine move by 2x from one minute to the next; the ratios are the result.
- **The hand-rolled store** (`hand-rolled (limit)`, the baseline of every ratio) is
  hand-written redis-py doing the same Redis work as redsession (owner check, append,
  counters, sliding expiry of every key, the per-user, activity, users, expiry and dirty
  indexes) in one EVALSHA of a minimal Lua script, with no validation and plain dicts out
  (records decoded with orjson). Its client is built as redsession builds its own by default
  (the same pool class and socket timeouts): what a careful team would write. The target is
  redsession >= 0.9x of it on log_interaction and resume, in every setup.
  `hand-rolled, plain client` is the same store on `redis.Redis.from_url` with redis-py's
  defaults: the ratio against it shows what those settings cost.
- **Client CPU** is also counted in instructions (valgrind's callgrind) on a canned reply:
  the reply recorded once from a real server is replayed on a socketpair, so everything the
  client does runs and no server or network does (bench/canned.py). Instruction counts repeat
  run after run on a noisy machine, where seconds do not; the target is at most 1.5x the
  hand-rolled store's count. `make bench-instructions` checks redsession's counts against
  bench/instructions.json in CI (a regression of more than 10% fails).
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
## Optimisation log

Profiled with pyinstrument and cProfile on the hot paths, then measured each change as client
CPU per operation: both variants interleaved in one process, minimum over 150-300 repetitions
(the end-to-end tables above move too much with the machine's load to resolve a few µs).

### 2026-11-24, second pass: validate once

"Client CPU without I/O" runs the core's operation on a canned Redis reply: the old commit
(2ee8f2c) and the new one alternately, three runs each, minimum of 30 x 500 calls per run.

| change | measure | before | after |
|---|---|---:|---:|
| reads build the models from records checked by msgspec (`_StoredInteraction`, in C) instead of validating them again with pydantic; Session, SessionRecord and listing rows built directly from the hash (`models.trusted`) | resume, client CPU without I/O (raw limit's Python: 27-31 µs) | 133-193 µs | 76-86 µs |
| — same | decoding 20 records | 84-98 µs | 45-47 µs |
| new interactions built with `trusted` instead of `model_construct`; drivers catch Redis errors with try/except instead of a generator context manager; plain JSON scalars skip the validation walk's stack | log_interaction, client CPU without I/O (raw limit's Python: 4-6 µs) | 22.3 µs | 18.0 µs |
| all of the above | x raw limit, sync / asyncio 64 / 4 processes, one run before (5 rounds) and one after (9 rounds), same machine and hour | resume 0.69 / 0.44 / 0.62; log 0.85 / 0.67 / 0.85 | resume 0.78 / 0.67 / 0.78; log 0.79 / 0.76 / 0.81 |

The log_interaction ratios moved within the noise of this machine (its end-to-end ratios
drift by 0.1-0.2 from run to run); its client CPU fell by 4 µs. The tables above are from a
later full run.

Measured and not done:

- Type checks of each record written in Python (exact keys, field types, UTC timestamp)
  instead of msgspec: 63-86 µs per 20 records, as slow as pydantic's own 65-98 µs.
  `model_construct` per record: 121-161 µs.
- pydantic-core validating a TypedDict instead of the model: 36-40 µs per 20 records, then
  building the models, 64-66 µs in all; msgspec with the models: 42-45 µs.
- A semaphore in the async driver over an unbounded connection pool, instead of redis-py's
  BlockingConnectionPool, and a timeout per command instead of the socket timeout: the
  production client cost 0.90-0.92x of a plain one in the raw limit's loop either way (15
  interleaved rounds); no gain worth the change.

### 2026-11-24, first pass

| change | measure | before | after |
|---|---|---:|---:|
| decode a history in one pydantic call (`TypeAdapter(list[Interaction])` over the joined records) instead of one call per record | decoding 20 records | 70.3 µs | 61.4 µs |
| — same | resume, client CPU without I/O | 96.5 µs | 88.1 µs |
| compute each Lua script's SHA once (`Script.sha` hashed the 2.9 KB source on every call) | log_interaction, client CPU with I/O (raw limit in the same runs: 59.9 / 59.6 µs) | 107.4 µs (raw/ours 0.56) | 95.2 µs (raw/ours 0.63) |
| list_active_sessions in one round trip on a single server (ZREVRANGE + HMGETs in one script; a cluster keeps the two steps) | throughput x raw limit, sync / asyncio 64 / 4 processes | 0.32 / 0.31 / 0.25 | 0.53 / 0.64 / 0.49 |

- hiredis pays: compare the `redsession, no hiredis` rows (pure-Python parser) above.
  orjson does every JSON encode.

### Where the rest of the gap to the raw limit is

- **resume**: the raw limit hands back orjson dicts; redsession builds 21 pydantic models
  (~0.7 µs each with `trusted`, ~15 µs per resume) plus the checks, and runs the production
  client (blocking pool, socket timeouts). Without any model at all (the core returning
  the decoded dicts; an experiment, not shipped) asyncio resume reached 0.79-0.80x; with the
  models and no checks, 0.70-0.82x. In the asyncio setup the event loop is CPU-bound, so
  every µs of Python shows, and shows more than in a tight loop (cache effects of the
  larger code path: the same core costs roughly twice its canned time there).
- **log_interaction**: validating the caller's input (ids, text sizes, metadata walk and
  limits, topics), the id and the model cost ~14 µs of client CPU over the raw limit's
  Python; our session script (owner and tombstone checks, topic limit) runs ~11 µs longer
  on the server (EVALSHA usec_per_call 78 against 67); our script with the raw limit's
  Python reached 0.87x sync. No single part is worth more than a few per cent.
- **export**: a `SessionExport` plus `model_dump(mode="json")`, against plain orjson dicts.
  **list_active_sessions**: `SessionSummary` models per row.
- Closing the rest means returning something other than validated models (plain dicts, or a
  history decoded on access) or not validating callers' input: API decisions, not
  optimisations.
"""
