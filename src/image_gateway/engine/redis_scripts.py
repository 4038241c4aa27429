"""The Lua scripts behind the Redis TaskStore: every lease change and every fenced write is one script,
so it is atomic (no read-modify-write across round trips) and batched (one call per poll batch).

Keys, under a prefix P (default "ig:"):
    P t:<id>    hash   r: the record (JSON, no key), f: fencing token of its last writer, u: its updated,
                       p / s: live percent and status (written per progress change), c: "1" = cancel asked
    P l:<id>    string the poll lease: the holder's fencing token, with PX = TASK_LEASE_S
    P fence     counter fencing tokens (monotonic, never reused)
    P live      zset    tasks that need an owner (unfinished, or finished with a webhook pending)
                        -> lease expiry (ms, Redis clock); a takeover scan claims those past it
    P created   zset    every task -> created (unix s), for GET /admin/tasks
    P done      zset    finished tasks -> updated (unix s), for the TTL sweep
    P inst      zset    instance label -> heartbeat expiry (ms): how many processes share the work
    P ev:<id>   channel progress and end events of a task (pub/sub)
Times come from Redis (TIME), so processes on machines with skewed clocks agree on expiry.
Script arguments name the keys through the prefix (one Redis, not a cluster).
"""

from __future__ import annotations

_NOW = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# A lease is ours when it holds our token; an absent lease whose record is ours (or gone) is taken back
# (Redis restarted or lost it): a task another process took over carries that process's token in `f`.
_OURS = """
local function ours(P, id, token, lease, now)
  local lk = P .. 'l:' .. id
  local cur = redis.call('GET', lk)
  if cur == token then return 1 end
  if cur then return 0 end
  local f = redis.call('HGET', P .. 't:' .. id, 'f')
  if f and f ~= token then return 0 end
  -- (a record that is no longer live is finished and settled: its lease is never taken back)
  if f and not redis.call('ZSCORE', P .. 'live', id) then return 0 end
  redis.call('SET', lk, token, 'PX', lease)
  redis.call('ZADD', P .. 'live', now + lease, id)
  if f then return 1 end
  return 2
end
"""

# ARGV: P, lease_ms, then per record 8 values: id, token ("" = a new task: create its lease),
# record JSON, status, percent, created, updated, flags ("t" terminal, "r" release the lease).
# Returns per record its token, "" when the write was refused (the lease is someone else's), or "-"
# when it is older than the stored one (a retried write that was overtaken: dropped, lease kept).
SAVE = _NOW + _OURS + """
local P, lease = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local TERMINAL = {succeeded = true, failed = true, cancelled = true}
local out = {}
for i = 3, #ARGV, 8 do
  local id, token, rec, status, pct = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local created, updated, flags = ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]
  local tk = P .. 't:' .. id
  local ok = 0
  if token == '' then
    if redis.call('EXISTS', tk) == 0 and redis.call('EXISTS', P .. 'l:' .. id) == 0 then
      token = tostring(redis.call('INCR', P .. 'fence'))
      redis.call('SET', P .. 'l:' .. id, token, 'PX', lease)
      redis.call('ZADD', P .. 'live', now + lease, id)
      ok = 1
    end
  else
    local was = redis.call('HMGET', tk, 'f', 's', 'u')
    if was[1] == token and ((TERMINAL[was[2]] and not TERMINAL[status])
        or (was[3] and tonumber(was[3]) > tonumber(updated))) then
      ok = -1
    else
      ok = ours(P, id, token, lease, now)
    end
  end
  if ok == -1 then
    out[#out + 1] = '-'
  elseif ok > 0 then
    redis.call('HSET', tk, 'r', rec, 'f', token, 's', status, 'p', pct, 'u', updated)
    redis.call('ZADD', P .. 'created', created, id)
    if string.find(flags, 't', 1, true) then
      redis.call('ZADD', P .. 'done', updated, id)
      redis.call('PUBLISH', P .. 'ev:' .. id, '{"end":"' .. status .. '"}')
    end
    if string.find(flags, 'r', 1, true) then
      redis.call('DEL', P .. 'l:' .. id)
      redis.call('ZREM', P .. 'live', id)
    end
    out[#out + 1] = token
  else
    out[#out + 1] = ''
  end
end
return out
"""

# ARGV: P, lease_ms, instance, then pairs id, token. Renews each lease that is still ours and the
# instance's heartbeat. Returns [live instances, then per pair 1 renewed, 2 taken back but its record
# is gone (write it again), 0 lost].
RENEW = _NOW + _OURS + """
local P, lease, inst = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', P .. 'inst', '-inf', now)
redis.call('ZADD', P .. 'inst', now + lease, inst)
local out = {redis.call('ZCARD', P .. 'inst')}
for i = 4, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local r = ours(P, id, token, lease, now)
  if r == 1 then
    redis.call('PEXPIRE', P .. 'l:' .. id, lease)
    redis.call('ZADD', P .. 'live', 'XX', now + lease, id)
  end
  out[#out + 1] = r
end
return out
"""

# ARGV: P, lease_ms, min_share, max_claims, tasks the caller holds, then explicit ids (none: scan `live`
# for expired leases). Claims each unleased task whose record exists; a scan takes what brings the
# caller up to its fair share of all tasks (live tasks / live instances), at least min_share, so the
# survivors of a crash split its tasks in one scan each. Returns quadruples id, token, record JSON,
# cancel flag ("1" or "").
CLAIM = _NOW + """
local P, lease, share, cap, mine = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]),
  tonumber(ARGV[5])
local now = now_ms()
local ids = {}
if #ARGV > 5 then
  for i = 6, #ARGV do ids[#ids + 1] = ARGV[i] end
else
  if redis.call('ZCOUNT', P .. 'live', '-inf', now) == 0 then return {} end
  local inst = math.max(1, redis.call('ZCOUNT', P .. 'inst', now, '+inf'))
  local fair = math.ceil(redis.call('ZCARD', P .. 'live') / inst) - mine
  local n = math.min(cap, math.max(share, fair))
  ids = redis.call('ZRANGEBYSCORE', P .. 'live', '-inf', now, 'LIMIT', 0, n)
end
local out = {}
for _, id in ipairs(ids) do
  local lk, tk = P .. 'l:' .. id, P .. 't:' .. id
  local pttl = redis.call('PTTL', lk)
  if pttl > 0 then
    redis.call('ZADD', P .. 'live', 'XX', now + pttl, id)
  elseif redis.call('EXISTS', tk) == 0 then
    redis.call('ZREM', P .. 'live', id)
  else
    local token = tostring(redis.call('INCR', P .. 'fence'))
    redis.call('SET', lk, token, 'PX', lease)
    redis.call('HSET', tk, 'f', token)
    redis.call('ZADD', P .. 'live', now + lease, id)
    local v = redis.call('HMGET', tk, 'r', 'c')
    out[#out + 1] = id
    out[#out + 1] = token
    out[#out + 1] = v[1]
    out[#out + 1] = v[2] or ''
  end
end
return out
"""

# ARGV: P, instance ("" = stays), then pairs id, token: each lease still ours is dropped and made due at
# once (a graceful shutdown hands its tasks to the next scan of another process, and leaves the count
# of instances the fair shares are computed from).
RELEASE = """
local P = ARGV[1]
if ARGV[2] ~= '' then redis.call('ZREM', P .. 'inst', ARGV[2]) end
local n = 0
for i = 3, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  if redis.call('GET', P .. 'l:' .. id) == token then
    redis.call('DEL', P .. 'l:' .. id)
    redis.call('ZADD', P .. 'live', 'XX', 0, id)
    n = n + 1
  end
end
return n
"""

# ARGV: P, then quadruples id, token, status, percent: live progress of tasks whose lease is ours,
# stored on the record's hash and published to its listeners.
PROGRESS = """
local P = ARGV[1]
for i = 2, #ARGV, 4 do
  local id, token, status, pct = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if redis.call('GET', P .. 'l:' .. id) == token then
    redis.call('HSET', P .. 't:' .. id, 's', status, 'p', pct)
    redis.call('PUBLISH', P .. 'ev:' .. id, '{"s":"' .. status .. '","p":' .. pct .. '}')
  end
end
return 0
"""

# ARGV: P, cutoff (unix s), max: deletes finished tasks updated before the cutoff that nobody holds.
SWEEP = """
local P = ARGV[1]
local ids = redis.call('ZRANGEBYSCORE', P .. 'done', '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local n = 0
for _, id in ipairs(ids) do
  if redis.call('EXISTS', P .. 'l:' .. id) == 0 then
    redis.call('ZREM', P .. 'done', id)
    redis.call('DEL', P .. 't:' .. id)
    redis.call('ZREM', P .. 'created', id)
    redis.call('ZREM', P .. 'live', id)
    n = n + 1
  end
end
return n
"""
