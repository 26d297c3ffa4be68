-- Sluice: one operation on the fair queue of a pool (concurrency or fair share), atomically with
-- the pool. It follows script.lua (clock, windows) and pools.lua (fair share), concatenated ahead
-- of it (see queue.rs), so a fair-share pool's state is read, stepped and written with the batch
-- script's own functions. See queue.rs for KEYS, ARGV and the reply; each step mirrors
-- algorithm/queue/mod.rs `apply` and its seats.rs.
local SCALE = 1000000
-- Redis's Lua unpacks a few thousand values at most, and a queue holds up to 10 000 tickets:
-- multi-member commands go in chunks (an even size, so ZADD's score-member pairs stay whole).
local CHUNK = 1000
-- How long the queue keys outlive the latest deadline, in ms.
local MARGIN = 1000

local pool, q, qd, qt, qv, qi, qg = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local shares = ARGV[2] == 'P'
local limit, channel, op, id = tonumber(ARGV[3]), ARGV[5], ARGV[6], ARGV[7]
-- A concurrency pool's lease TTL (µs); a fair-share pool's window.
local ttl, period = nil, nil
if shares then period = parse_period(ARGV[4]) else ttl = tonumber(ARGV[4]) end

-- The clock (script.lua): Redis TIME, unless the caller pinned the time (tests), which also
-- skips expiry. It sets the `now` the fair-share functions read.
begin_request('A', ARGV[1])

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

-- A fair-share ticket's own fields (`K|qi`): cost, weight and deadline, then the tenant (bytes,
-- commas included, so last).
local function pack(t)
  return int(t.cost) .. ',' .. int(t.weight) .. ',' .. int(t.deadline) .. ',' .. t.tenant
end

local function unpack_ticket(packed)
  local a = string.find(packed, ',', 1, true)
  local b = string.find(packed, ',', a + 1, true)
  local c = string.find(packed, ',', b + 1, true)
  return {
    cost = tonumber(string.sub(packed, 1, a - 1)),
    weight = tonumber(string.sub(packed, a + 1, b - 1)),
    deadline = tonumber(string.sub(packed, b + 1, c - 1)),
    tenant = string.sub(packed, c + 1),
  }
end

-- The hit pools.lua's `share` steps for ticket `t`.
local function share_hit(t)
  return { limit = limit, period = period, tenant = t.tenant, weight = t.weight }
end

-- Tickets past their deadline leave (with their fields); so do expired leases (counted as
-- reclaimed) and fair-share grants past their waiter's deadline (their units stay charged).
-- A concurrency pool nobody waits for, polled (as after every release): nothing can be
-- dispatched, so the answer is the ticket's lease alone, and nothing is written (expired leases
-- stay stored until the next write, as between batches; they do not count).
if not shares and op == 'P' and redis.call('EXISTS', q) == 0 then
  local lease = redis.call('ZSCORE', pool, id)
  local status = 'gone'
  if lease and tonumber(lease) > now then status = 'granted' end
  return { status, 0, 0, 0, 0, {} }
end

local dead = redis.call('ZRANGEBYSCORE', qd, '-inf', int(now))
local queue_changed = #dead > 0
if queue_changed then
  chunked('ZREM', q, dead)
  redis.call('ZREMRANGEBYSCORE', qd, '-inf', int(now))
  if shares then chunked('HDEL', qi, dead) end
end
-- The pool: a fair-share pool's state as the batch script loads it (nil when absent), or a
-- concurrency pool's live leases, counted.
local st, reclaimed, live = nil, 0, 0
if shares then
  local ended = redis.call('ZRANGEBYSCORE', qg, '-inf', int(now))
  if #ended > 0 then
    chunked('HDEL', qi, ended)
    redis.call('ZREMRANGEBYSCORE', qg, '-inf', int(now))
    queue_changed = true
  end
  st = load_shares(pool)
else
  reclaimed = redis.call('ZREMRANGEBYSCORE', pool, '-inf', int(now))
  live = redis.call('ZCARD', pool)
end
local pool_changed = reclaimed > 0

-- Whether ticket `id` was granted and still holds it: a live lease, or a fair-share grant.
local function holds(ticket)
  if shares then return redis.call('ZSCORE', qg, ticket) end
  return redis.call('ZSCORE', pool, ticket)
end

local refused = nil
-- Tickets granted by this operation, in grant order.
local granted = {}
if op == 'E' then
  -- The deadline is on the store's clock: the waiter says how long it waits.
  local weight, deadline, max_depth = tonumber(ARGV[8]), now + tonumber(ARGV[9]), tonumber(ARGV[10])
  -- A concurrency ticket is one lease, whatever it asks for.
  local cost = shares and tonumber(ARGV[11]) or 1
  local tenant = ARGV[12]
  if redis.call('ZSCORE', q, id) or holds(id) then
    -- Enqueueing a ticket already queued or granted only looks at it.
  elseif weight == 0 then
    refused = 'unweighted'
  elseif shares and cost > limit then
    -- A fair-share pool never admits more than its capacity at once.
    refused = 'oversized'
  elseif redis.call('ZCARD', q) >= max_depth then
    refused = 'full'
  elseif not shares and live < limit and redis.call('EXISTS', q) == 0 then
    -- Nobody waits and a slot is free: the ticket is granted its lease at once, and the queue
    -- it would have been queued in and emptied again is never written (what `apply` computes,
    -- an empty queue, is no state). The pool expires one TTL past its last lease, as below.
    redis.call('ZADD', pool, int(now + ttl), id)
    if expire then
      redis.call('PEXPIRE', pool, int(math.ceil((score(pool, -1) + ttl - now) / 1000)))
    end
    -- Tickets that just left at their deadline took the queue with them: what is left of it
    -- (the virtual time, the tags) goes too.
    if queue_changed then redis.call('DEL', q, qd, qt, qv) end
    return { 'granted', 0, 0, 0, reclaimed, { id } }
  else
    local vtime = tonumber(redis.call('GET', qv) or '0')
    local tag = tonumber(redis.call('HGET', qt, tenant) or '0')
    local finish = math.max(vtime, tag) + idiv(cost * SCALE, weight)
    -- Equal tags order by member, byte by byte: the ids' order, as in Rust.
    redis.call('ZADD', q, int(finish), id)
    redis.call('ZADD', qd, int(deadline), id)
    if shares then
      redis.call('HSET', qi, id,
        pack({ cost = cost, weight = weight, deadline = deadline, tenant = tenant }))
    end
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
    if shares then redis.call('HDEL', qi, id) end
    queue_changed = true
  elseif shares then
    -- Granted meanwhile: its units are refunded to its tenant, and dispatched below.
    if redis.call('ZREM', qg, id) == 1 then
      local packed = redis.call('HGET', qi, id)
      redis.call('HDEL', qi, id)
      queue_changed = true
      if packed then
        local t = unpack_ticket(packed)
        local _, next_state, changed = share(share_hit(t), st, -t.cost)
        if changed then st, pool_changed = next_state, true end
      end
    end
  elseif redis.call('ZREM', pool, id) == 1 then
    -- Granted meanwhile: its lease is released, and the slot dispatched below.
    pool_changed = true
    live = live - 1
  end
end

-- The virtual time moves to the last tag granted, and the tags it passed are forgotten.
local function advance_vtime(last_tag)
  local vtime = math.max(tonumber(redis.call('GET', qv) or '0'), last_tag)
  redis.call('SET', qv, int(vtime))
  local tags, stale = redis.call('HGETALL', qt), {}
  for k = 1, #tags, 2 do
    if tonumber(tags[k + 1]) <= vtime then stale[#stale + 1] = tags[k] end
  end
  chunked('HDEL', qt, stale)
end

if shares then
  -- Dispatch: in (tag, id) order, every ticket the pool admits now is granted and charged; a
  -- refused ticket and every later one of its tenant wait (first come, first served within a
  -- tenant). A refusal leaves the state as it was. Once the window's units are all admitted
  -- nothing more fits (every cost is at least 1), so the walk stops there.
  local total = share_roll({ period = period }, st).n
  local skip, grants, last_tag = {}, {}, 0
  local from = 0
  while total < limit do
    local page = redis.call('ZRANGE', q, from, from + CHUNK - 1, 'WITHSCORES')
    if #page == 0 then break end
    local ids = {}
    for k = 1, #page, 2 do ids[#ids + 1] = page[k] end
    local fields = redis.call('HMGET', qi, unpack(ids))
    for k = 1, #ids do
      local packed = fields[k]
      if packed then
        local t = unpack_ticket(packed)
        if not skip[t.tenant] then
          local r, next_state = share(share_hit(t), st, t.cost)
          if r[3] == 1 then
            skip[t.tenant] = true
          else
            st, total = next_state, next_state.n
            granted[#granted + 1] = ids[k]
            grants[#grants + 1] = int(t.deadline)
            grants[#grants + 1] = ids[k]
            last_tag = math.max(last_tag, tonumber(page[2 * k]))
            if total >= limit then break end
          end
        end
      end
    end
    from = from + CHUNK
  end
  if #granted > 0 then
    -- A grant is kept until its waiter's deadline, scored by it (`K|qg`); its fields stay.
    chunked('ZREM', q, granted)
    chunked('ZREM', qd, granted)
    chunked('ZADD', qg, grants)
    advance_vtime(last_tag)
    pool_changed, queue_changed = true, true
  end
elseif live < limit then
  -- Dispatch: the free slots go to the head tickets, in (tag, id) order, each a lease of a full
  -- TTL with the ticket's id.
  local heads = redis.call('ZRANGE', q, 0, int(limit - live - 1), 'WITHSCORES')
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
    advance_vtime(tonumber(heads[#heads]))
    pool_changed, queue_changed = true, true
  end
end

local depth = redis.call('ZCARD', q)
local status, ahead = refused, 0
if not status then
  local rank = redis.call('ZRANK', q, id)
  if rank then
    status, ahead = 'waiting', rank
  elseif op ~= 'W' and holds(id) then
    status = 'granted'
  else
    status = 'gone'
  end
end
-- While tickets wait, the queue next moves without a release at the soonest ticket deadline,
-- lease expiry (a concurrency pool) or window end (a fair-share pool): how long from now.
local moves_in = 0
if depth > 0 then
  local soonest = score(qd, 0)
  if shares then
    local _, stop = window_at(period, idiv(now, SEC))
    soonest = math.min(soonest, stop * SEC)
  else
    local lease = score(pool, 0)
    if lease then soonest = math.min(soonest, lease) end
  end
  moves_in = soonest - now
end

if pool_changed and shares then
  -- Written as the batch script writes it, expiring as algorithm::expires_at says: at the end of
  -- the window after its own.
  local at = (st.s + 2 * nominal_secs(period)) * SEC
  if at <= now then
    redis.call('DEL', pool)
  else
    store_shares(pool, st)
    if expire then redis.call('PEXPIRE', pool, int(math.ceil((at - now) / 1000))) end
  end
elseif pool_changed and expire then
  -- The pool expires as the batch script would expire it (algorithm::expires_at): one TTL past
  -- its last lease. Redis deletes a sorted set whose last member leaves.
  local last = score(pool, -1)
  if last then
    redis.call('PEXPIRE', pool, int(math.ceil((last + ttl - now) / 1000)))
  end
end
local keys = { q, qd, qt, qv }
if shares then keys = { q, qd, qt, qv, qi, qg } end
local held = shares and redis.call('ZCARD', qg) or 0
if depth == 0 and held == 0 then
  -- An empty queue (no tickets, no grants) is no state: the virtual time starts again from 0.
  -- (One that was empty and stayed so has no keys to delete.)
  if queue_changed then redis.call('DEL', unpack(keys)) end
elseif queue_changed and expire then
  -- Shortly after the latest deadline every ticket and grant is gone: those of a replica that
  -- died leave with the keys.
  local latest = score(qd, -1) or 0
  if held > 0 then latest = math.max(latest, score(qg, -1)) end
  local ms = int(math.max(math.ceil((latest - now) / 1000), 0) + MARGIN)
  for _, key in ipairs(keys) do redis.call('PEXPIRE', key, ms) end
end

-- Other replicas' waiters look again (not for a ticket granted to this operation's own caller,
-- who has the answer). pcall: a user not allowed the channel still gets its answer, and those
-- waiters poll on their timers anyway.
local others = false
for _, g in ipairs(granted) do
  if g ~= id then others = true end
end
if others and channel ~= '' then
  redis.pcall('PUBLISH', channel, pool)
end

return { status, ahead, depth, moves_in, reclaimed, granted }
