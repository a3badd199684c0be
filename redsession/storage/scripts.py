"""The Lua scripts behind every session operation: each one round trip, atomic on its slot.

Every script runs with the same KEYS and leading ARGV, set out in PRELUDE, then arguments
of its own (ARGV[7] on), documented at each script, then a trailer of three that PRELUDE's
begin() takes off (the event stream's length, the operation window, the operation id). Each
is a Redis function (commands.Script): PRELUDE's local functions are defined once, when its
library loads, and every call only sets the variables they read (begin). A write
runs once per operation id: a retry whose first reply was lost gets that reply and changes
nothing. Writes put an event on the stream (ids and kinds, never content) in the same
script on one server. Scripts reply with a status table:
{'ok', ...}, {'missing'}, {'gone', tombstone}, {'denied'}, {'exists'}, {'conflict'},
{'limit', n}, {'empty'}, {'interaction', record} or {'legacy'}.

History records are JSON objects whose first members are the entry's time (a fixed 27
bytes at a fixed place, so that times compare as strings), id and kind (model/codec.py): the
scripts read those, never the rest, which may be encrypted.

Tombstones are ``deleted <owner>`` or ``merged <owner> <primary>``; a caller who names an
owner (a user's token) and is not that owner is told 'missing', exactly as for an id that
never existed, so that no reply says whether another user's session exists.
"""

from __future__ import annotations

from redsession.storage.commands import Script
from redsession.storage.indexes import lua_functions
from redsession.storage.keys import (
    GLOBAL_SUFFIXES,
    LOG_SUFFIX,
    OLD_OPS_SUFFIX,
    OPS_SUFFIX,
    SESSION_HEAD,
    SESSION_TAIL,
    SIDE_INDEX_SUFFIX,
    SIDE_SUFFIX,
    TOMB_SUFFIX,
    USER_HEAD,
    USER_PREFS_TAIL,
)

OPS_KEEP = 128  # operations a generation of a session's ops holds (see once())

PRELUDE = f"""
-- KEYS[1] the session hash; its log and tombstone are that name + '{LOG_SUFFIX}' and
--   '{TOMB_SUFFIX}', its side keys (keys.py) + '{SIDE_SUFFIX}' and '{SIDE_INDEX_SUFFIX}'
--   (one slot). The indexes are named from ARGV[1]: see indexes.py.
-- ARGV[1] the key prefix, or '' to leave the indexes alone (a cluster: the caller updates
--   them in a second step), ARGV[2] now (µs: times of records, the dirty stamp),
-- ARGV[3] the activity time (µs; '' = now), ARGV[4] the new expiry (µs),
-- ARGV[5] the preferences' TTL (ms), ARGV[6] the owner required ('' = any).
-- The last three ARGV, taken off by begin() so that #ARGV counts a script's own: the event
-- stream's MAXLEN ('0' = no events), how long a session remembers an operation (ms), and
-- the operation id of a write ('' = a read).
-- begin() sets them, on every call; the local functions below, defined once, read them.
local OP, OP_WINDOW_MS, EVENTS, HASH, LOG, TOMB, OPS, OLDOPS, SIDE, SIDEIX
local P, NOW, ACTIVE, EXP_US, EXP_MS, PREFS_MS, OWNER, SID
-- The session's topics (JSON) as owner() read them, for add_topics (one read fewer).
local TOPICS

-- A time in ms from one in µs, both integers as text (the digits but the last three: no
-- number formatting, which costs more than the rest of begin()).
local function ms(us)
  return string.sub(us, 1, -4)
end

local function begin()
  local n = #ARGV
  OP, OP_WINDOW_MS, EVENTS = ARGV[n], ARGV[n - 1], ARGV[n - 2]
  ARGV[n], ARGV[n - 1], ARGV[n - 2] = nil, nil, nil
  HASH = KEYS[1]
  LOG, TOMB = HASH .. '{LOG_SUFFIX}', HASH .. '{TOMB_SUFFIX}'
  OPS = HASH .. '{OPS_SUFFIX}'
  OLDOPS = OPS .. '{OLD_OPS_SUFFIX}'
  SIDE, SIDEIX = HASH .. '{SIDE_SUFFIX}', HASH .. '{SIDE_INDEX_SUFFIX}'
  P, NOW, ACTIVE, EXP_US = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
  PREFS_MS, OWNER = ARGV[5], ARGV[6]
  if ACTIVE == '' then ACTIVE = NOW end
  EXP_MS = ms(EXP_US)  -- PEXPIREAT takes ms
  SID = string.sub(HASH, #P + {len(SESSION_HEAD)} + 1, -{len(SESSION_TAIL)} - 1)
  TOPICS = false
end
"""
PRELUDE += """
-- The live session's owner, or nil and the reply that says why there is none. A write is
-- refused while a merge has fenced the session: it answers as the merged tombstone will.
-- A merged tombstone (and a fence) names the primary's owner, who alone may follow it.
local function owner(write)
  local h = redis.call('HMGET', HASH, 'user_id', 'merging', 'topics')
  local uid = h[1]
  TOPICS = h[3]
  if not uid then
    local t = redis.call('GET', TOMB)
    if not t then return nil, {'missing'} end
    if OWNER ~= '' and string.match(t, '^%a+ (%S+)') ~= OWNER then return nil, {'missing'} end
    return nil, {'gone', t}
  end
  if OWNER ~= '' and OWNER ~= uid then return nil, {'denied'} end
  if write and h[2] then
    if OWNER ~= '' and string.match(h[2], '^(%S+)') ~= OWNER then return nil, {'missing'} end
    return nil, {'gone', 'merged ' .. h[2]}
  end
  return uid
end

-- Whether the session changed since the caller read it as (version, total): a CAS check.
local function changed(version, total)
  local cur = redis.call('HMGET', HASH, 'version', 'total_interactions')
  return cur[1] ~= version or cur[2] ~= total
end

-- Sliding expiry: one absolute time for every key, so their TTLs stay equal (the side keys'
-- only when there are any: most sessions have none, and one EXISTS is cheaper than two).
local function expire()
  redis.call('PEXPIREAT', HASH, EXP_MS)
  redis.call('PEXPIREAT', LOG, EXP_MS)
  redis.call('PEXPIREAT', OPS, EXP_MS)
  if redis.call('EXISTS', SIDE, SIDEIX) > 0 then
    redis.call('PEXPIREAT', SIDE, EXP_MS)
    redis.call('PEXPIREAT', SIDEIX, EXP_MS)
  end
end

-- The side data, for an export: {HGETALL of the side hash, every index member}.
local function side_data()
  return {redis.call('HGETALL', SIDE), redis.call('ZRANGE', SIDEIX, 0, -1)}
end

-- Writes side data: field/value pairs ARGV[from..from+2n-1], then index members up to ``to``.
local function set_side(from, n, to)
  for i = from, from + 2 * n - 1, 1000 do
    redis.call('HSET', SIDE, unpack(ARGV, i, math.min(i + 999, from + 2 * n - 1)))
  end
  for i = from + 2 * n, to, 500 do
    local zargs = {}
    for j = i, math.min(i + 499, to) do
      zargs[#zargs + 1] = 0
      zargs[#zargs + 1] = ARGV[j]
    end
    redis.call('ZADD', SIDEIX, unpack(zargs))
  end
end

-- A record is a JSON object that starts {"timestamp":"<27 bytes>","id":"<id>","kind":"...
-- (model/codec.py). Its time and id, or nil for a record written before that layout.
local function rtime(rec)
  if string.sub(rec, 1, 14) == '{"timestamp":"' then return string.sub(rec, 15, 41) end
  return nil
end

local function rid(rec)
  return string.match(rec, '^","id":"([^"]*)"', 42)
end

-- Counts as activity: the write or read that calls it slides the session's expiry.
local function touch(uid, n)
  if n then
    redis.call('HSET', HASH, 'total_interactions', n, 'last_activity', ACTIVE, 'expires_at', EXP_US)
  else
    redis.call('HSET', HASH, 'last_activity', ACTIVE, 'expires_at', EXP_US)
  end
  expire()
end

-- Appends records ARGV[from..to] to the log; returns the new length.
local function push(from, to)
  if to < from then return redis.call('LLEN', LOG) end
  local n
  for i = from, to, 1000 do
    n = redis.call('RPUSH', LOG, unpack(ARGV, i, math.min(i + 999, to)))
  end
  return n
end

-- Writes the scope ARGV[at] (unless '') and the state field/value pairs ARGV[from..to].
local function fields(at, from, to)
  if ARGV[at] ~= '' then redis.call('HSET', HASH, 'scope', ARGV[at]) end
  if to >= from then redis.call('HSET', HASH, unpack(ARGV, from, to)) end
end

-- Adds ARGV[from..#ARGV] to the session's topics (first seen first); false past ``limit``.
local function add_topics(from, limit)
  if #ARGV < from then return true end
  local topics = cjson.decode(TOPICS or redis.call('HGET', HASH, 'topics'))
  local seen = {}
  for _, t in ipairs(topics) do seen[t] = true end
  local added = false
  for i = from, #ARGV do
    if not seen[ARGV[i]] then
      seen[ARGV[i]] = true
      topics[#topics + 1] = ARGV[i]
      added = true
    end
  end
  if limit and #topics > limit then return false, #topics end
  if added then redis.call('HSET', HASH, 'topics', cjson.encode(topics)) end
  return true
end
"""
PRELUDE += f"""
-- An event on the stream: ids and a kind, never content. On a cluster (P '') the caller
-- writes it in its second step (store.py), deduplicated by operation id there.
local function event(kind, uid, ...)
  if P == '' or EVENTS == '0' then return end
  redis.call('XADD', P .. '{GLOBAL_SUFFIXES["events"]}', 'MAXLEN', '~', EVENTS, '*',
    'kind', kind, 'sid', SID, 'uid', uid, 'op', OP, 'at', NOW, ...)
end

-- The operations a session remembers, in two generations: OPS, the newest, and OLDOPS, the
-- one before. When OPS holds {OPS_KEEP} it becomes OLDOPS (the generation before that goes), which
-- lives on for OP_WINDOW_MS at most. So the last {OPS_KEEP} operations are always remembered, no
-- more than {2 * OPS_KEEP} are, and a busy session's memory stays bounded at no cost per write.
-- A write, applied once per operation id: a repeat (a retry whose first reply was lost)
-- gets the first reply and changes nothing. Only 'ok' replies change anything.
local function once(apply)
  if OP == '' then return apply() end
  local seen = redis.call('HGET', OPS, OP) or redis.call('HGET', OLDOPS, OP)
  if seen then return cmsgpack.unpack(seen) end
  local reply = apply()
  if reply[1] ~= 'ok' then return reply end
  redis.call('HSET', OPS, OP, cmsgpack.pack(reply))
  local n = redis.call('HLEN', OPS)
  -- A new hash: expire() ran before it existed. Else it slid with the session's keys (or
  -- took its tombstone's time, in DELETE).
  if n == 1 then redis.call('PEXPIREAT', OPS, EXP_MS)
  elseif n >= {OPS_KEEP} then
    redis.call('RENAME', OPS, OLDOPS)
    redis.call('PEXPIRE', OLDOPS, OP_WINDOW_MS)
  end
  return reply
end
"""
PRELUDE += lua_functions()  # index(uid, created), unindex(uid): the rule of indexes.py


def _new_hash(uid: str, context: str, created: str) -> str:
    """Lua that writes a new session's hash, from Lua expressions."""
    return f"""redis.call('HSET', HASH, 'user_id', {uid}, 'created_at', {created},
  'last_activity', ACTIVE, 'expires_at', EXP_US, 'total_interactions', 0,
  'context', {context}, 'topics', '[]', 'version', 0, 'merged_from', '[]')"""


PRELUDE += f"""
-- For a write to a session that owner() found missing (its reply ``err``): when ``create``
-- names a user, a new empty session of theirs with the scope ARGV[scope_at], never over a
-- tombstone, but for this user's own 'deleted' one with ``reuse_deleted`` (an id reused on
-- purpose). (owner, true), or (nil, the reply that says why there is none).
local function create_missing(create, scope_at, reuse_deleted, err)
  if create == '' or redis.call('EXISTS', HASH) == 1 then return nil, err end
  if OWNER ~= '' and OWNER ~= create then return nil, err end
  local tomb = redis.call('GET', TOMB)
  if tomb then
    if not reuse_deleted or tomb ~= 'deleted ' .. create then return nil, err end
    redis.call('DEL', TOMB)
  end
  {_new_hash("create", "'{}'", "NOW")}
  fields(scope_at, 1, 0)
  return create, true
end

-- The owner of the live session for a write, or a new one for ``create`` (create_missing):
-- (owner, created), or (nil, the reply that says why there is none).
local function owner_or_create(create, scope_at)
  local uid, err = owner(true)
  if uid then return uid, false end
  return create_missing(create, scope_at, false, err)
end
"""


def _session(name: str, body: str) -> Script:
    """A script that reads a session: PRELUDE defined once, at load; begin() on each call."""
    return Script(name, f"begin()\n{body}", setup=PRELUDE)


def _write(name: str, body: str) -> Script:
    """A script that changes a session: once per operation id (PRELUDE's once)."""
    setup = f"{PRELUDE}\nlocal function apply()\n{body}\nend\n"
    return Script(name, "begin()\nreturn once(apply)", setup=setup, writes=True)


# ARGV[7] user id, ARGV[8] context JSON, ARGV[9] created_at (µs), ARGV[10] scope (JSON,
# '' = none), ARGV[11] '1' to reuse the id of a session this user deleted (its tombstone
# goes; a merged one, or another user's, still refuses), ARGV[12..] session state fields
# and values ("state:<key>", JSON).
CREATE = _write(
    "create",
    f"""
if redis.call('EXISTS', HASH) == 1 then return {{'exists'}} end
local tomb = redis.call('GET', TOMB)
if tomb then
  if ARGV[11] ~= '1' or tomb ~= 'deleted ' .. ARGV[7] then return {{'exists'}} end
  redis.call('DEL', TOMB)
end
{_new_hash("ARGV[7]", "ARGV[8]", "ARGV[9]")}
fields(10, 12, #ARGV)
expire()
index(ARGV[7], true)
event('create', ARGV[7])
return {{'ok', ARGV[9]}}
""",
)

# ARGV[7] '1' to count as activity (resume), '2' the same with a 'resume' event, '3' to
# slide the expiry only (the activity time, which orders the listings, stays), or '0' (a
# plain read), ARGV[8] how many of the newest records to return (-1: all of them), ARGV[9]
# '1' to return the side data too (an export). Reply: {'ok', HGETALL as a flat list, newest
# records oldest first[, side_data()]}.
FETCH = _session(
    "fetch",
    """
local uid, err = owner(false)
if not uid then return err end
if ARGV[7] ~= '0' then
  if ARGV[7] == '3' then ACTIVE = redis.call('HGET', HASH, 'last_activity') end
  touch(uid)
  index(uid)
  if ARGV[7] == '2' then event('resume', uid) end
end
local n = tonumber(ARGV[8])
local history = {}
if n < 0 then history = redis.call('LRANGE', LOG, 0, -1)
elseif n > 0 then history = redis.call('LRANGE', LOG, -n, -1) end
if ARGV[9] == '1' then return {'ok', redis.call('HGETALL', HASH), history, side_data()} end
return {'ok', redis.call('HGETALL', HASH), history}
""",
)

# ARGV[7] '1' to count as activity, ARGV[8] at most this many ('' = all),
# ARGV[9] only positions before this ('' = to the end).
# Reply: {'ok', owner, log length, records oldest first}. O(returned), not O(history).
HISTORY = _session(
    "history",
    """
local uid, err = owner(false)
if not uid then return err end
if ARGV[7] == '1' then
  touch(uid)
  index(uid)
end
local len = redis.call('LLEN', LOG)
local stop = len
if ARGV[9] ~= '' then stop = math.min(len, tonumber(ARGV[9])) end
local start = 0
if ARGV[8] ~= '' then start = math.max(0, stop - tonumber(ARGV[8])) end
if stop <= start then return {'ok', uid, len, {}} end
return {'ok', uid, len, redis.call('LRANGE', LOG, start, stop - 1)}
""",
)

# ARGV[7] '1' to count as activity, ARGV[8] the earliest time wanted (a record TIME),
# ARGV[9] a time some seconds before it: writers' clocks may disagree by that much, so the
# log is read back from the newest record until a record older than this one (or a record
# written before headers, older still). Reply: {'ok', owner, records at or after ARGV[8],
# oldest first}. O(records returned + records in the clock-skew margin).
AFTER = _session(
    "after",
    """
local uid, err = owner(false)
if not uid then return err end
if ARGV[7] == '1' then
  touch(uid)
  index(uid)
end
local since, floor = ARGV[8], ARGV[9]
local found, stop, page = {}, -1, 64
while true do
  local recs = redis.call('LRANGE', LOG, stop - page + 1, stop)
  for i = #recs, 1, -1 do
    local t = rtime(recs[i])
    if not t or t < floor then
      local out = {}
      for j = #found, 1, -1 do out[#out + 1] = found[j] end
      return {'ok', uid, out}
    end
    if t >= since then found[#found + 1] = recs[i] end
  end
  if #recs < page then break end
  stop = stop - page
end
local out = {}
for j = #found, 1, -1 do out[#out + 1] = found[j] end
return {'ok', uid, out}
""",
)

# ARGV[7] an entry id. The record of that id, looked for from the newest record back, 64 at
# a time (ids are in the clear header, so this works under encryption too).
# Reply: {'ok', owner, the record} or {'ok', owner} when no record has that id.
# O(records newer than it): a framework reads the entries near the head most.
ENTRY = _session(
    "entry",
    """
local uid, err = owner(false)
if not uid then return err end
local want, stop, page = ARGV[7], -1, 64
while true do
  local recs = redis.call('LRANGE', LOG, stop - page + 1, stop)
  for i = #recs, 1, -1 do
    if rtime(recs[i]) and rid(recs[i]) == want then return {'ok', uid, recs[i]} end
  end
  if #recs < page then return {'ok', uid} end
  stop = stop - page
end
""",
)

# ARGV[7] max topics per session, ARGV[8] k, the number of records that follow,
# ARGV[9..8+k] the records, oldest first; ARGV[9+k] the user to create the session for
# when it does not exist ('' = do not create: 'missing'), ARGV[10+k] its scope (JSON, or '');
# ARGV[11+k] m, then m arguments: session state fields and values ("state:<key>", JSON) to
# set with the records; ARGV[12+k+m] the revision expected ('' = no check, 'new' = the
# session must not exist yet, '=<revision>' = its 'revision' field must be that),
# ARGV[13+k+m] the revision to set ('' = leave it); ARGV[14+k+m..] topics to add.
# A 'new' write may replace its own owner's 'deleted' tombstone (the id is reused on
# purpose: a late write carries the revision it read, which no longer exists).
# O(k + m) whatever the history length; O(topics) for the topic union.
# Reply: {'ok', owner, new length, 1 if it created the session else 0, the first record's
# time}, {'limit', topic count} or {'conflict'} when the revision is not the one expected.
APPEND = _write(
    "append",
    """
local k = tonumber(ARGV[8])
local m = tonumber(ARGV[11 + k])
local want, rev = ARGV[12 + k + m], ARGV[13 + k + m]
local uid, err = owner(true)
if want ~= '' then
  if uid and (want == 'new' or redis.call('HGET', HASH, 'revision') ~= string.sub(want, 2)) then
    return {'conflict'}
  end
  if not uid and want ~= 'new' then return {'conflict'} end
end
local created = false
if not uid then
  uid, created = create_missing(ARGV[9 + k], 10 + k, want == 'new', err)
  if not uid then return created end
end
local ok, count = add_topics(14 + k + m, tonumber(ARGV[7]))
if not ok then return {'limit', count} end
if m > 0 then redis.call('HSET', HASH, unpack(ARGV, 12 + k, 11 + k + m)) end
if rev ~= '' then redis.call('HSET', HASH, 'revision', rev) end
local n = push(9, 8 + k)
touch(uid, n)
index(uid, created)
if created then event('create', uid) end
event('log', uid)
return {'ok', uid, n, created and 1 or 0, k > 0 and rtime(ARGV[9]) or ''}
""",
)

# ARGV[7] the record the caller expects at the tail ('' = look first), ARGV[8] what
# replaces it ('' = remove it). With ARGV[7] '': an item at the tail is removed and
# returned; an interaction is returned as {'interaction', record} untouched, for the caller
# to split (its newest item is the assistant's answer) and come back with both arguments.
# Reply: {'ok', owner, removed or replaced record, new length}, {'empty'}, {'conflict'}.
POP = _write(
    "pop",
    """
local uid, err = owner(true)
if not uid then return err end
local tail = redis.call('LINDEX', LOG, -1)
if not tail then return {'empty'} end
if ARGV[7] == '' then
  -- an item's kind follows its id; anything else (an interaction, old or new) is split by
  -- the caller
  local id = rtime(tail) and rid(tail)
  if not (id and string.find(tail, '^","kind":"item"', 50 + #id)) then
    return {'interaction', tail}
  end
elseif tail ~= ARGV[7] then
  return {'conflict'}
end
if ARGV[8] == '' then redis.call('RPOP', LOG) else redis.call('LSET', LOG, -1, ARGV[8]) end
local n = redis.call('LLEN', LOG)
touch(uid, n)
index(uid)
event('history', uid)
return {'ok', uid, tail, n}
""",
)

# Replaces the whole history, keeping the session (clear it with no records; compaction).
# ARGV[7..] the new records, oldest first. Reply: {'ok', owner, new length}.
REPLACE_HISTORY = _write(
    "replace_history",
    """
local uid, err = owner(true)
if not uid then return err end
redis.call('DEL', LOG)
local n = push(7, #ARGV)
touch(uid, n)
index(uid)
event('history', uid)
return {'ok', uid, n}
""",
)

# ARGV[7] the version the new context was computed from, ARGV[8] the new context (JSON).
# Reply: {'ok', new version, owner} or {'conflict'} when another writer got there first.
UPDATE_CONTEXT = _write(
    "update_context",
    """
local uid, err = owner(true)
if not uid then return err end
if redis.call('HGET', HASH, 'version') ~= ARGV[7] then return {'conflict'} end
local v = redis.call('HINCRBY', HASH, 'version', 1)
redis.call('HSET', HASH, 'context', ARGV[8])
touch(uid)
index(uid)
event('context', uid)
return {'ok', v, uid}
""",
)

# ARGV[7] '' to delete, or the primary a fenced session was merged into (MERGE_INTO has
# taken its content), ARGV[8] the tombstone's TTL (ms), ARGV[9] the primary's owner,
# ARGV[10] the revision expected ('' = no check; see APPEND).
# Reply: {'ok', owner}; {'conflict'} when a merge tombstone finds no fence for that primary,
# or the session's revision is not the one expected.
DELETE = _write(
    "delete",
    """
local uid, err = owner(ARGV[7] == '')
if not uid then return err end
if ARGV[10] ~= '' and redis.call('HGET', HASH, 'revision') ~= ARGV[10] then
  return {'conflict'}
end
local tomb = 'deleted ' .. uid
if ARGV[7] ~= '' then
  tomb = 'merged ' .. ARGV[9] .. ' ' .. ARGV[7]
  if redis.call('HGET', HASH, 'merging') ~= ARGV[9] .. ' ' .. ARGV[7] then
    return {'conflict'}
  end
end
redis.call('DEL', HASH, LOG, SIDE, SIDEIX)
redis.call('SET', TOMB, tomb, 'PX', ARGV[8])
redis.call('PEXPIRE', OPS, ARGV[8])  -- a repeated delete gets its first reply meanwhile
unindex(uid)
if ARGV[7] == '' then event('delete', uid) else event('merge', uid, 'into', ARGV[7]) end
return {'ok', uid}
""",
)

# The first step of a merge, on the secondary: from now on it refuses writes, which answer
# as its merged tombstone will (SessionMerged, naming the primary), so that nothing written
# to it can be lost while its content moves. ARGV[7] the primary, ARGV[8] its owner.
# Idempotent for the same primary. Reply: {'ok', owner}; {'gone', ...} when fenced (or
# merged) for another primary.
FENCE = _write(
    "fence",
    """
local uid, err = owner(false)
if not uid then return err end
local fence = redis.call('HGET', HASH, 'merging')
local mine = ARGV[8] .. ' ' .. ARGV[7]
if fence and fence ~= mine then return {'gone', 'merged ' .. fence} end
redis.call('HSET', HASH, 'merging', mine)
return {'ok', uid}
""",
)

# The second step of a merge, on the primary: the fenced secondary's records join the
# primary's history, interleaved by (time, id) and deduplicated by id (the primary's copy
# wins), in one step, so that appends to the primary racing with the merge are kept.
# ARGV[7] the primary's version the caller read (its context was merged from that one),
# ARGV[8] the merged context ('' = unchanged), ARGV[9] the secondary's created_at (µs),
# ARGV[10] merged_from (JSON; '' = unchanged), ARGV[11] m, ARGV[12..11+m] the secondary's
# state fields and values (set where the primary has none), ARGV[12+m] k, then the
# secondary's k records, then its topics. EXP_US/EXP_MS and ACTIVE carry the secondary's expiry and
# last activity: the later wins. The version moves only when the context or merged_from do,
# so a re-run after a crash changes nothing that the first run did.
# Reply: {'ok', version, length}; {'conflict'} if the version changed since ARGV[7];
# {'legacy'} if the primary holds records written before headers (UPGRADE them first).
MERGE_INTO = _write(
    "merge_into",
    """
local uid, err = owner(true)
if not uid then return err end
if redis.call('HGET', HASH, 'version') ~= ARGV[7] then return {'conflict'} end
local m = tonumber(ARGV[11])
local k = tonumber(ARGV[12 + m])
local r0 = 13 + m  -- the first record
local seen, all = {}, {}
local function add(rec)
  local t = rtime(rec)
  if not t then return false end
  local id = rid(rec)
  local key = t .. ' ' .. id
  if not seen[id] then
    seen[id] = true
    all[#all + 1] = {key, rec}
    return true
  end
  return nil
end
for _, rec in ipairs(redis.call('LRANGE', LOG, 0, -1)) do
  if add(rec) == false then return {'legacy'} end
end
for i = r0, r0 + k - 1 do add(ARGV[i]) end
for i, e in ipairs(all) do e[3] = i end
-- "TIME ID" compares as (time, id): TIME is fixed width
table.sort(all, function(a, b) return a[1] < b[1] end)
local moved = false
for i, e in ipairs(all) do if e[3] ~= i then moved = true end end
if moved or redis.call('LLEN', LOG) ~= #all then
  redis.call('DEL', LOG)
  for i = 1, #all, 1000 do
    local chunk = {}
    for j = i, math.min(i + 999, #all) do chunk[#chunk + 1] = all[j][2] end
    redis.call('RPUSH', LOG, unpack(chunk))
  end
end
local cur = redis.call('HMGET', HASH, 'created_at', 'last_activity', 'expires_at', 'version')
local function later(a, b) if tonumber(a) > tonumber(b) then return a end return b end
if tonumber(ARGV[9]) < tonumber(cur[1]) then redis.call('HSET', HASH, 'created_at', ARGV[9]) end
ACTIVE = later(cur[2], ACTIVE)
EXP_US = later(cur[3], EXP_US)
EXP_MS = ms(EXP_US)
add_topics(r0 + k, nil)
for i = 12, 11 + m, 2 do redis.call('HSETNX', HASH, ARGV[i], ARGV[i + 1]) end
local v = tonumber(cur[4])
if ARGV[8] ~= '' or ARGV[10] ~= '' then v = redis.call('HINCRBY', HASH, 'version', 1) end
if ARGV[8] ~= '' then redis.call('HSET', HASH, 'context', ARGV[8]) end
if ARGV[10] ~= '' then redis.call('HSET', HASH, 'merged_from', ARGV[10]) end
touch(uid, #all)
index(uid)
return {'ok', v, #all}
""",
)

# Rewrites records written before headers in place, each only while it is still there:
# ARGV[7..] triples of position (from the head), old record, new record. Appends go to the
# tail, so positions hold. Reply: {'ok', records rewritten}.
UPGRADE = _write(
    "upgrade",
    """
local uid, err = owner(true)
if not uid then return err end
local n = 0
for i = 7, #ARGV, 3 do
  if redis.call('LINDEX', LOG, ARGV[i]) == ARGV[i + 1] then
    redis.call('LSET', LOG, ARGV[i], ARGV[i + 2])
    n = n + 1
  end
end
return {'ok', n}
""",
)

# Replace a whole session (import, restore, key rotation).
# ARGV[7] mode: 'new' (refuse if it or its tombstone exists), 'replace', or 'cas'
# (only if version and total still equal ARGV[9] and ARGV[10]); ARGV[8] the event's kind
# ('import', 'restore', 'rotate'); ARGV[11] k, the number of hash field/value arguments
# that follow, ARGV[12] s, the number of side field/value pairs after them, ARGV[13] x, the
# number of side index members after those, ARGV[14] with 'cas': the side data's revision
# (the hash's side_rev, '0' when absent) it must still have ('' = not checked); then the hash
# fields, the side data and the history records, oldest first. Reply: {'ok', previous owner
# or ''}.
WRITE = _write(
    "write",
    """
local mode = ARGV[7]
if mode == 'new' then
  if redis.call('EXISTS', HASH, TOMB) > 0 then return {'exists'} end
elseif mode == 'cas' then
  local uid, err = owner(true)
  if not uid then return err end
  if changed(ARGV[9], ARGV[10]) then return {'conflict'} end
  if ARGV[14] ~= '' and (redis.call('HGET', HASH, 'side_rev') or '0') ~= ARGV[14] then
    return {'conflict'}
  end
end
local k, s, x = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
local uid
for i = 15, 14 + k, 2 do
  if ARGV[i] == 'user_id' then uid = ARGV[i + 1] end
end
local old = redis.call('HGET', HASH, 'user_id')
if old and old ~= uid then unindex(old) end
redis.call('DEL', HASH, LOG, TOMB, SIDE, SIDEIX)
redis.call('HSET', HASH, unpack(ARGV, 15, 14 + k))
set_side(15 + k, s, 14 + k + 2 * s + x)
push(15 + k + 2 * s + x, #ARGV)
expire()
index(uid, true)
event(ARGV[8], uid)
return {'ok', old or ''}
""",
)

# A user's preferences, run on the session prelude with KEYS[1] the user's preferences hash
# (whose OPS is then the user's), so a retried write is applied once like a session's.
# ARGV[4] the preferences' new expiry (µs), ARGV[7] n, the number of field/value arguments
# to set that follow, then the fields to remove. Its event names the user and no session.
# Reply: {'ok'}.
PREFS = _write(
    "prefs",
    f"""
local n = tonumber(ARGV[7])
if n > 0 then redis.call('HSET', HASH, unpack(ARGV, 8, 7 + n)) end
if #ARGV > 7 + n then redis.call('HDEL', HASH, unpack(ARGV, 8 + n, #ARGV)) end
redis.call('PEXPIREAT', HASH, EXP_MS)
SID = ''
event('prefs', string.sub(HASH, #P + {len(USER_HEAD)} + 1, -{len(USER_PREFS_TAIL)} - 1))
return {{'ok'}}
""",
)

# Events written outside a session script: a cluster's second step (the session script
# could not reach the stream's slot), and cleanup's expired sessions. Deduplicated by
# operation id, so a retried step writes each once. KEYS[1] the stream, KEYS[2] the ZSET of
# the dedupe ids written (-> µs, kept for the window); ARGV[1] MAXLEN, ARGV[2] the window
# (ms), ARGV[3] now (µs), then per event: its dedupe id (the operation id and the kind; ''
# for a read's event, not deduplicated), n, and n field/value arguments.
# Reply: the number of events written.
EVENT = Script(
    "event",
    """
local now = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[2]) * 1000)
local i, written = 4, 0
while i <= #ARGV do
  local dedupe, n = ARGV[i], tonumber(ARGV[i + 1])
  if dedupe == '' or redis.call('ZADD', KEYS[2], 'NX', now, dedupe) == 1 then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, i + 2, i + 1 + n))
    written = written + 1
  end
  i = i + 2 + n
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return written
""",
)


# For the scripts of other storage modules (checkpoints.py): on the same prelude.
session_script, write_script = _session, _write
