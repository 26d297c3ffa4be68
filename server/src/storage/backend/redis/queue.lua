-- Sluice: one operation on the fair queue of a concurrency pool, atomically with the pool. See
-- queue.rs for KEYS, ARGV and the reply; each step mirrors algorithm/queue/mod.rs `apply`.
local SEC = 1000000
local SCALE = 1000000
-- Redis's Lua unpacks a few thousand values at most, and a queue holds up to 10 000 tickets:
-- multi-member commands go in chunks (an even size, so ZADD's score-member pairs stay whole).
local CHUNK = 1000
-- How long the queue keys outlive the latest deadline, in ms.
local MARGIN = 1000

local pool, q, qd, qt, qv = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local slots, ttl, channel, op, id = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6]

-- The clock: Redis TIME, unless the caller pinned the time (tests), which also skips expiry.
local now, expire = tonumber(ARGV[1]), false
if not now then
  local t = redis.call('TIME')
  now, expire = tonumber(t[1]) * SEC + tonumber(t[2]), true
end

-- Numbers go to Redis as exact decimal strings, never in Lua's %.14g.
local function int(x) return string.format('%.0f', x) end

local function chunked(command, key, list)
  for k = 1, #list, CHUNK do
    redis.call(command, key, unpack(list, k, math.min(k + CHUNK - 1, #list)))
  end
end

local function score(key, at)
  local found = redis.call('ZRANGE', key, at, at, 'WITHSCORES')
  if #found == 0 then return nil end
  return tonumber(found[2])
end

-- Tickets past their deadline leave; so do expired leases (counted as reclaimed).
local dead = redis.call('ZRANGEBYSCORE', qd, '-inf', int(now))
local queue_changed = #dead > 0
if queue_changed then
  chunked('ZREM', q, dead)
  redis.call('ZREMRANGEBYSCORE', qd, '-inf', int(now))
end
local reclaimed = redis.call('ZREMRANGEBYSCORE', pool, '-inf', int(now))
local pool_changed = reclaimed > 0
local live = redis.call('ZCARD', pool)

local refused = nil
if op == 'E' then
  -- The deadline is on the store's clock: the waiter says how long it waits.
  local weight, deadline, max_depth = tonumber(ARGV[7]), now + tonumber(ARGV[8]), tonumber(ARGV[9])
  local tenant = ARGV[10]
  if redis.call('ZSCORE', q, id) or redis.call('ZSCORE', pool, id) then
    -- Enqueueing a ticket already queued or granted only looks at it.
  elseif weight == 0 then
    refused = 'unweighted'
  elseif redis.call('ZCARD', q) >= max_depth then
    refused = 'full'
  else
    local vtime = tonumber(redis.call('GET', qv) or '0')
    local tag = tonumber(redis.call('HGET', qt, tenant) or '0')
    local finish = math.max(vtime, tag) + math.floor(SCALE / weight)
    -- Equal tags order by member, byte by byte: the ids' order, as in Rust.
    redis.call('ZADD', q, int(finish), id)
    redis.call('ZADD', qd, int(deadline), id)
    -- A tag at or behind the virtual time makes no difference: it is not kept.
    if finish > vtime then
      redis.call('HSET', qt, tenant, int(finish))
    else
      redis.call('HDEL', qt, tenant)
    end
    queue_changed = true
  end
elseif op == 'W' then
  if redis.call('ZREM', q, id) == 1 then
    redis.call('ZREM', qd, id)
    queue_changed = true
  elseif redis.call('ZREM', pool, id) == 1 then
    -- Granted meanwhile: its lease is released, and the slot dispatched below.
    pool_changed = true
    live = live - 1
  end
end

-- Dispatch: the free slots go to the head tickets, in (tag, id) order, each a lease of a full TTL
-- with the ticket's id.
local granted = {}
if live < slots then
  local heads = redis.call('ZRANGE', q, 0, int(slots - live - 1), 'WITHSCORES')
  if #heads > 0 then
    local leases = {}
    for k = 1, #heads, 2 do
      granted[#granted + 1] = heads[k]
      leases[#leases + 1] = int(now + ttl)
      leases[#leases + 1] = heads[k]
    end
    chunked('ZREM', q, granted)
    chunked('ZREM', qd, granted)
    chunked('ZADD', pool, leases)
    -- The virtual time moves to the last tag granted, and the tags it passed are forgotten.
    local vtime = math.max(tonumber(redis.call('GET', qv) or '0'), tonumber(heads[#heads]))
    redis.call('SET', qv, int(vtime))
    local tags, stale = redis.call('HGETALL', qt), {}
    for k = 1, #tags, 2 do
      if tonumber(tags[k + 1]) <= vtime then stale[#stale + 1] = tags[k] end
    end
    chunked('HDEL', qt, stale)
    pool_changed, queue_changed = true, true
  end
end

local depth = redis.call('ZCARD', q)
local status, ahead = refused, 0
if not status then
  local rank = redis.call('ZRANK', q, id)
  if rank then
    status, ahead = 'waiting', rank
  elseif op ~= 'W' and redis.call('ZSCORE', pool, id) then
    status = 'granted'
  else
    status = 'gone'
  end
end
-- While tickets wait, the queue next moves without a release at the soonest lease expiry or
-- ticket deadline: how long from now.
local moves_in = 0
if depth > 0 then
  local soonest = score(qd, 0)
  local lease = score(pool, 0)
  if lease then soonest = math.min(soonest, lease) end
  moves_in = soonest - now
end

-- The pool expires as the batch script would expire it (algorithm::expires_at): one TTL past its
-- last lease. Redis deletes a sorted set whose last member leaves.
if pool_changed and expire then
  local last = score(pool, -1)
  if last then
    redis.call('PEXPIRE', pool, int(math.ceil((last + ttl - now) / 1000)))
  end
end
if depth == 0 then
  -- An empty queue is no state: the virtual time starts again from 0.
  redis.call('DEL', q, qd, qt, qv)
elseif queue_changed and expire then
  -- Shortly after the latest deadline every ticket is gone: the tickets of a replica that died
  -- leave with the keys.
  local ms = int(math.max(math.ceil((score(qd, -1) - now) / 1000), 0) + MARGIN)
  for _, key in ipairs({ q, qd, qt, qv }) do redis.call('PEXPIRE', key, ms) end
end

-- Other replicas' waiters look again. pcall: a user not allowed the channel still gets its
-- answer, and those waiters poll on their timers anyway.
if #granted > 0 and channel ~= '' then
  redis.pcall('PUBLISH', channel, pool)
end

return { status, ahead, depth, moves_in, reclaimed, granted }
