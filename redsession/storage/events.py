"""Reading the event stream, and what its followers keep: a cursor each and dead letters.

The write scripts put events on the stream (storage/scripts.py, Store.events_of); this
module reads them back. A consumer (a webhook URL, or anything that follows the store) keeps
the id of the last event it is done with, so that it resumes there after a restart, and the
events it gave up on go to a dead-letter stream. All of it lives in the stream's slot
(``{events}``), so one script moves a cursor and writes a dead letter together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redsession.storage.commands import Arg, Batch, Eval, Op, Reply, Script, hash_reply, text
from redsession.storage.keys import Keys

Entry = tuple[str, dict[str, str]]  # a stream entry: its id and its fields, as text

CURSOR, DEAD = "cursor:", "dead:"  # the consumers hash's fields: + the consumer's name

# KEYS[1] the consumers HASH, KEYS[2] the dead-letter STREAM; ARGV[1] the consumer,
# ARGV[2] the id of the event it is done with, ARGV[3] the dead-letter stream's MAXLEN,
# ARGV[4..] (only when it gave up on the event) the dead letter's field/value pairs.
# Moves the consumer's cursor to ARGV[2], never back: an ack sent again (its reply lost) or
# one from a leader that has been replaced changes nothing and writes no second dead letter.
# Reply: 1 if the cursor moved, 0 if it was already there or past it.
ACK = Script(
    "event_ack",
    setup="""
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-?(%d*)$')
  return tonumber(ms), tonumber(seq) or 0
end
""",
    body="""
local field = 'cursor:' .. ARGV[1]
local cur = redis.call('HGET', KEYS[1], field)
if cur then
  local cm, cs = parse(cur)
  local nm, ns = parse(ARGV[2])
  if nm < cm or (nm == cm and ns <= cs) then return 0 end
end
if #ARGV > 3 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'consumer', ARGV[1],
    unpack(ARGV, 4))
  redis.call('HINCRBY', KEYS[1], 'dead:' .. ARGV[1], 1)
end
redis.call('HSET', KEYS[1], field, ARGV[2])
return 1
""",
)


class EventStream:
    """The event stream's read operations, and its consumers' cursors and dead letters."""

    def __init__(self, keys: Keys, maxlen: int) -> None:
        self.keys = keys
        # Dead letters are kept as long as events are (at least one, if events are off).
        self._dead_maxlen = max(1, maxlen)

    def read(self, after: str | None, count: int) -> Op[list[Entry]]:
        """Up to ``count`` entries after ``after`` (exclusive; None: from the oldest)."""
        lo = "-" if after is None else f"({after}"
        (reply,) = yield Batch((("XRANGE", self.keys.events, lo, "+", "COUNT", count),))
        return entries(reply)

    def wait(self, after: str | None, count: int, block_ms: int) -> Op[list[Entry]]:
        """Like read(), but when there is nothing after ``after`` wait up to ``block_ms`` for
        an entry (XREAD BLOCK); [] if none came."""
        cmd = ("XREAD", "COUNT", count, "BLOCK", block_ms, "STREAMS", self.keys.events,
               after or "0-0")  # fmt: skip
        (reply,) = yield Batch((cmd,), blocking=True)
        if not reply:
            return []
        if isinstance(reply, dict):  # RESP3: {stream: [entries]}
            (found,) = reply.values()
            return entries(found[0] if found and isinstance(found[0], list) else found)
        return entries(reply[0][1])  # RESP2: [[stream, entries]]

    def cursor(self, consumer: str) -> Op[str | None]:
        """The id of the last event ``consumer`` is done with (None: it has not started)."""
        (raw,) = yield Batch((("HGET", self.keys.event_consumers, CURSOR + consumer),))
        return None if raw is None else text(raw)

    def ack(self, consumer: str, event_id: str, dead: Sequence[Arg] = ()) -> Op[bool]:
        """Move the consumer's cursor to ``event_id``; ``dead`` (field/value pairs): it gave
        up on the event, which goes to the dead letters with them. False: already done."""
        keys = (self.keys.event_consumers, self.keys.event_dead)
        moved = yield Eval(ACK, keys, (consumer, event_id, self._dead_maxlen, *dead))
        return bool(moved)

    def counts(self) -> Op[tuple[int, int]]:
        """(events on the stream, dead letters ever written by all consumers)."""
        n, h = yield Batch((("XLEN", self.keys.events), ("HGETALL", self.keys.event_consumers)))
        dead = sum(int(v) for f, v in hash_reply(h).items() if f.startswith(DEAD))
        return int(n), dead


def entries(reply: Reply) -> list[Entry]:
    """XRANGE's reply as (id, fields) pairs of text, however redis-py parsed it."""
    out: list[Entry] = []
    for raw_id, raw_fields in reply or ():
        out.append((text(raw_id), _fields(raw_fields)))
    return out


def _fields(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    return hash_reply(raw)
