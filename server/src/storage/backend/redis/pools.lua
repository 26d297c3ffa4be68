-- Pools that know who holds them: concurrency leases (algorithm/lease.rs) and weighted fair
-- share (algorithm/share.rs). Each function mirrors its namesake operation for operation.

-- Lease ids are 32 lower-case hex digits, compared byte by byte: Lua's string `<` follows the
-- server's collation locale, which must not decide an order Rust computes by bytes.
local function id_before(a, b)
  for k = 1, #a do
    local x, y = string.byte(a, k), string.byte(b, k)
    if x ~= y then return x < y end
  end
  return #a < #b
end

local function lease_before(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  return id_before(a[2], b[2])
end

local function insert_lease(list, item)
  local at = #list + 1
  for k, l in ipairs(list) do
    if lease_before(item, l) then at = k; break end
  end
  table.insert(list, at, item)
end

-- Concurrency pool; state: the live leases { expiry, id } in (expiry, id) order.
local function lease(h, st, delta)
  local slots = h.limit
  local ttl = nominal_secs(h.period) * SEC
  local live = st or {}
  local id = h.lease
  local held = nil
  if id then
    for k, l in ipairs(live) do
      if l[2] == id then held = k; break end
    end
  end
  local used_before = #live
  local function reset_of(list)
    if #list == 0 then return 0 end
    return list[#list][1] - now
  end
  local function copy_without(skip)
    local out = {}
    for k, l in ipairs(live) do
      if k ~= skip then out[#out + 1] = { l[1], l[2] } end
    end
    return out
  end
  if delta == 0 or (delta > 0 and not id) then
    return reading(used_before, used_before, used_before > slots, 0, reset_of(live)), st, false
  end
  if delta > 0 and held then
    local next = copy_without(held)
    insert_lease(next, { now + ttl, id })
    return reading(used_before, used_before, false, 0, reset_of(next)), next, true
  end
  if delta > 0 then
    if used_before + 1 > slots then
      local wait = ttl
      if slots > 0 then
        local must_leave = used_before + 1 - slots
        wait = live[must_leave][1] - now
      end
      return reading(used_before, used_before, true, wait, reset_of(live)), st, false
    end
    local next = copy_without(nil)
    insert_lease(next, { now + ttl, id })
    return reading(used_before, used_before + 1, false, 0, reset_of(next)), next, true
  end
  if id then
    local next = copy_without(held)
    return reading(used_before, #next, false, 0, reset_of(next)), next, true
  end
  return reading(used_before, 0, false, 0, 0), {}, true
end

local function load_leases(key)
  local stored = redis.call('ZCARD', key)
  local flat = redis.call('ZRANGEBYSCORE', key, '(' .. int(now), '+inf', 'WITHSCORES')
  local list = {}
  for k = 1, #flat, 2 do list[#list + 1] = { tonumber(flat[k + 1]), flat[k] } end
  return list, stored - #list
end

-- Fair-share pool; state: { s = window start, n = total, c = tenant count,
-- t = { [tenant id] = { weight, used, arrivals, prev } } }.
local function share_roll(h, st)
  local secs = nominal_secs(h.period)
  local start, stop = window_at(h.period, idiv(now, SEC))
  local clock = {
    elapsed = math.max(now - start * SEC, 1), remain = stop * SEC - now, window = secs * SEC,
  }
  local pool = { s = start, n = 0, c = 0, t = {} }
  if st and st.s == start then
    pool.n = st.n
    for id, r in pairs(st.t) do
      pool.t[id] = { r[1], r[2], r[3], r[4] }
      pool.c = pool.c + 1
    end
  elseif st and st.s + secs == start then
    for id, r in pairs(st.t) do
      if r[3] > 0 then
        pool.t[id] = { r[1], 0, 0, r[3] }
        pool.c = pool.c + 1
      end
    end
  end
  return pool, clock
end

local function share_demand(r, c)
  local fading = r[4] * c.remain / c.window + r[3]
  local projected = r[3] * c.window / c.elapsed
  return math.max(fading, projected)
end

-- Tenant `me_id`'s guarantee (its view `me`, nil when untracked) and the others' reserves.
local function share_assess(capacity, pool, me_id, me, c)
  local active = me and me[1] or 0
  for id, r in pairs(pool.t) do
    if id ~= me_id and share_demand(r, c) > 0 then active = active + r[1] end
  end
  local function guarantee(w)
    if active == 0 then return 0 end
    return math.floor(capacity * w / active)
  end
  local reserves = 0
  for id, r in pairs(pool.t) do
    if id ~= me_id then
      local d = share_demand(r, c)
      if d > 0 then
        local x = math.min(guarantee(r[1]), math.ceil(d)) - r[2]
        if x > 0 then reserves = reserves + x end
      end
    end
  end
  return me and guarantee(me[1]) or 0, reserves
end

local function share_fits(capacity, g, reserves, total, used, n)
  local after = total + n
  return after <= capacity and (used + n <= g or after + reserves <= capacity)
end

local function share_room(capacity, g, reserves, total, used)
  local pool = math.max(capacity - total, 0)
  local own = math.max(g - used, 0)
  local borrow = math.max(pool - reserves, 0)
  return math.min(pool, math.max(own, borrow))
end

local MAX_TENANTS = 512

local function share(h, st, delta)
  local capacity = h.limit
  local pool, clock = share_roll(h, st)
  local tid, weight = h.tenant, h.weight
  local stored = pool.t[tid]
  local arriving = math.max(delta, 0)
  local me = nil
  if stored then
    me = { weight, stored[2], stored[3] + arriving, stored[4] }
  elseif pool.c < MAX_TENANTS then
    me = { weight, 0, arriving, 0 }
  end
  local g, reserves = share_assess(capacity, pool, tid, me, clock)
  local used = me and me[2] or 0
  local room_before = share_room(capacity, g, reserves, pool.n, used)
  -- Past the tenant's guarantee, a hit can only borrow (an untracked tenant has none).
  local borrowing = arriving > 0 and used + arriving > g
  local function r(room_after, over)
    return reading(capacity - room_before, capacity - room_after, over,
      over and clock.remain or 0, clock.remain, borrowing)
  end
  if delta == 0 then return r(room_before, false), st, false end
  if delta < 0 then
    if not stored then return r(room_before, false), st, false end
    local back = math.min(-delta, stored[2])
    stored[2] = stored[2] - back
    pool.n = pool.n - back
    return r(share_room(capacity, g, reserves, pool.n, stored[2]), false), pool, true
  end
  local fits = share_fits(capacity, g, reserves, pool.n, used, arriving)
  local room_after = room_before
  if fits then
    pool.n = pool.n + arriving
    if me then me[2] = me[2] + arriving end
    room_after = share_room(capacity, g, reserves, pool.n, used + arriving)
  end
  if me then
    if not stored then pool.c = pool.c + 1 end
    pool.t[tid] = me
  end
  return r(room_after, not fits), pool, true
end

-- The state a rejected batch leaves (algorithm::uncharged): the arrival recorded.
local function share_arrival(h, st, delta)
  if delta <= 0 then return st end
  local pool = share_roll(h, st)
  local stored = pool.t[h.tenant]
  if stored then
    stored[1] = h.weight
    stored[3] = stored[3] + delta
  elseif pool.c < MAX_TENANTS then
    pool.t[h.tenant] = { h.weight, 0, delta, 0 }
    pool.c = pool.c + 1
  end
  return pool
end

local function load_shares(key)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return nil end
  local pool = { s = 0, n = 0, c = 0, t = {} }
  for k = 1, #flat, 2 do
    local field, value = flat[k], flat[k + 1]
    if field == 's' then
      pool.s = tonumber(value)
    elseif field == 'n' then
      pool.n = tonumber(value)
    else
      local w, u, a, p = string.match(value, '^(%d+),(%d+),(%d+),(%d+)$')
      pool.t[string.sub(field, 2)] = { tonumber(w), tonumber(u), tonumber(a), tonumber(p) }
      pool.c = pool.c + 1
    end
  end
  return pool
end

local function store_shares(key, pool)
  local args = { 's', int(pool.s), 'n', int(pool.n) }
  for id, r in pairs(pool.t) do
    args[#args + 1] = 't' .. id
    args[#args + 1] = int(r[1]) .. ',' .. int(r[2]) .. ',' .. int(r[3]) .. ',' .. int(r[4])
  end
  redis.call('DEL', key)
  redis.call('HSET', key, unpack(args))
end
