"""The Lua scripts behind every mutation: each one round trip, atomic on its session's slot.

Every script runs with the same KEYS and leading ARGV, set out in PRELUDE, then arguments
of its own (ARGV[11] on), documented at each script. Scripts reply with a status table:
{'ok', ...}, {'missing'}, {'gone', tombstone}, {'denied'}, {'exists'} or {'conflict'}.
"""

from __future__ import annotations

from redsession.storage.commands import Script
from redsession.storage.indexes import lua_functions

PRELUDE = """
-- KEYS[1] session hash, KEYS[2] interaction log, KEYS[3] tombstone: all in the session's slot.
-- KEYS[4..7] the global indexes (indexes.GLOBAL: sessions, users, expiry, dirty):
--   given on a single server only; on a cluster the caller updates them in a second step.
-- ARGV[1] user key head ('' = do not touch indexes), ARGV[2] user-sessions tail,
-- ARGV[3] user-prefs tail, ARGV[4] activity score (µs), ARGV[5] expires_at (µs),
-- ARGV[6] expires_at (ms, for PEXPIREAT), ARGV[7] now (µs, the dirty stamp),
-- ARGV[8] preferences TTL (ms), ARGV[9] required owner ('' = any), ARGV[10] session id.
local HASH, LOG, TOMB = KEYS[1], KEYS[2], KEYS[3]
local HEAD, TAIL_S, TAIL_P = ARGV[1], ARGV[2], ARGV[3]
local ACTIVE, EXP_US, EXP_MS, NOW = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local PREFS_MS, OWNER, SID = ARGV[8], ARGV[9], ARGV[10]

-- The live session's owner, or nil and the reply that says why there is none.
local function owner()
  local uid = redis.call('HGET', HASH, 'user_id')
  if not uid then
    local t = redis.call('GET', TOMB)
    if t then return nil, {'gone', t} end
    return nil, {'missing'}
  end
  if OWNER ~= '' and OWNER ~= uid then return nil, {'denied'} end
  return uid
end

-- Whether the session changed since the caller read it as (version, total): a CAS check.
local function changed(version, total)
  local cur = redis.call('HMGET', HASH, 'version', 'total_interactions')
  return cur[1] ~= version or cur[2] ~= total
end

-- Sliding expiry: one absolute time for every key, so their TTLs stay equal.
local function expire()
  redis.call('PEXPIREAT', HASH, EXP_MS)
  redis.call('PEXPIREAT', LOG, EXP_MS)
end
"""


PRELUDE += lua_functions()  # index(uid) and unindex(uid): the rule of indexes.py


def _session(name: str, body: str) -> Script:
    return Script(name, PRELUDE + body)


# ARGV[11] user id, ARGV[12] context JSON, ARGV[13] created_at (µs).
CREATE = _session(
    "create",
    """
if redis.call('EXISTS', HASH, TOMB) > 0 then return {'exists'} end
redis.call('HSET', HASH, 'user_id', ARGV[11], 'created_at', ARGV[13],
  'last_activity', ACTIVE, 'expires_at', EXP_US, 'total_interactions', 0,
  'context', ARGV[12], 'topics', '[]', 'version', 0, 'merged_from', '[]')
expire()
index(ARGV[11])
return {'ok'}
""",
)

# ARGV[11] '1' to count as activity (resume) or '0' (a plain read),
# ARGV[12] how many of the newest interactions to return (-1: all of them).
# Reply: {'ok', HGETALL as a flat list, newest interactions oldest first}.
FETCH = _session(
    "fetch",
    """
local uid, err = owner()
if not uid then return err end
if ARGV[11] == '1' then
  redis.call('HSET', HASH, 'last_activity', ACTIVE, 'expires_at', EXP_US)
  expire()
  index(uid)
end
local n = tonumber(ARGV[12])
local history = {}
if n < 0 then history = redis.call('LRANGE', LOG, 0, -1)
elseif n > 0 then history = redis.call('LRANGE', LOG, -n, -1) end
return {'ok', redis.call('HGETALL', HASH), history}
""",
)

# ARGV[11] at most this many ('' = all), ARGV[12] only positions before this ('' = to the end).
# Reply: {'ok', log length, interactions oldest first}. Read-only; O(returned), not O(history).
HISTORY = _session(
    "history",
    """
local uid, err = owner()
if not uid then return err end
local len = redis.call('LLEN', LOG)
local stop = len
if ARGV[12] ~= '' then stop = math.min(len, tonumber(ARGV[12])) end
local start = 0
if ARGV[11] ~= '' then start = math.max(0, stop - tonumber(ARGV[11])) end
if stop <= start then return {'ok', len, {}} end
return {'ok', len, redis.call('LRANGE', LOG, start, stop - 1)}
""",
)

# ARGV[11] the interaction record (JSON), ARGV[12] max topics per session,
# ARGV[13..] topics to add. O(1) in history length; O(topics) for the topic union.
# Reply: {'ok', owner, new length} or {'limit', topic count}.
LOG = _session(
    "log",
    """
local uid, err = owner()
if not uid then return err end
local topics_json
if #ARGV > 12 then
  local topics = cjson.decode(redis.call('HGET', HASH, 'topics'))
  local seen = {}
  for _, t in ipairs(topics) do seen[t] = true end
  local added = false
  for i = 13, #ARGV do
    if not seen[ARGV[i]] then
      seen[ARGV[i]] = true
      topics[#topics + 1] = ARGV[i]
      added = true
    end
  end
  if #topics > tonumber(ARGV[12]) then return {'limit', #topics} end
  if added then topics_json = cjson.encode(topics) end
end
local n = redis.call('RPUSH', LOG, ARGV[11])
redis.call('HSET', HASH, 'total_interactions', n, 'last_activity', ACTIVE, 'expires_at', EXP_US)
if topics_json then redis.call('HSET', HASH, 'topics', topics_json) end
expire()
index(uid)
return {'ok', uid, n}
""",
)

# ARGV[11] the version the new context was computed from, ARGV[12] the new context (JSON).
# Reply: {'ok', new version, owner} or {'conflict'} when another writer got there first.
UPDATE_CONTEXT = _session(
    "update_context",
    """
local uid, err = owner()
if not uid then return err end
if redis.call('HGET', HASH, 'version') ~= ARGV[11] then return {'conflict'} end
local v = redis.call('HINCRBY', HASH, 'version', 1)
redis.call('HSET', HASH, 'context', ARGV[12], 'last_activity', ACTIVE, 'expires_at', EXP_US)
expire()
index(uid)
return {'ok', v, uid}
""",
)

# ARGV[11] tombstone value ('deleted' or 'merged:<primary id>'), ARGV[12] its TTL (ms),
# ARGV[13] ARGV[14] expected version and total ('' = unchecked; merge uses them).
# Reply: {'ok', owner}.
DELETE = _session(
    "delete",
    """
local uid, err = owner()
if not uid then return err end
if ARGV[13] ~= '' and changed(ARGV[13], ARGV[14]) then return {'conflict'} end
redis.call('DEL', HASH, LOG)
redis.call('SET', TOMB, ARGV[11], 'PX', ARGV[12])
unindex(uid)
return {'ok', uid}
""",
)

# Replace a whole session (import, restore, the primary of a merge).
# ARGV[11] mode: 'new' (refuse if it or its tombstone exists), 'replace', or 'cas'
# (only if version and total still equal ARGV[12] and ARGV[13]); ARGV[14] k, the number
# of hash field/value arguments that follow; then the interaction records, oldest first.
# Reply: {'ok', previous owner or ''}.
WRITE = _session(
    "write",
    """
local mode = ARGV[11]
if mode == 'new' then
  if redis.call('EXISTS', HASH, TOMB) > 0 then return {'exists'} end
elseif mode == 'cas' then
  local uid, err = owner()
  if not uid then return err end
  if changed(ARGV[12], ARGV[13]) then return {'conflict'} end
end
local k = tonumber(ARGV[14])
local uid
for i = 15, 14 + k, 2 do
  if ARGV[i] == 'user_id' then uid = ARGV[i + 1] end
end
local old = redis.call('HGET', HASH, 'user_id')
if old and old ~= uid then unindex(old) end
redis.call('DEL', HASH, LOG, TOMB)
redis.call('HSET', HASH, unpack(ARGV, 15, 14 + k))
for i = 15 + k, #ARGV, 1000 do
  redis.call('RPUSH', LOG, unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
expire()
index(uid)
return {'ok', old or ''}
""",
)
