local STEP = { F = fixed, S = sliding, T = gcra, L = lease, P = share }

-- Per request (reset by decide): leases each written pool reclaims (expired but still stored
-- when loaded), the leases reclaimed, and each key's state as loaded (nil when absent or expired).
local expired_at_load, reclaimed, original = {}, 0, {}

-- Reading a counter's stored state, per algorithm.
local function load(key, alg)
  if alg == 'F' then
    local v = redis.call('HMGET', key, 'w', 'n')
    if v[1] then return { tonumber(v[1]), tonumber(v[2]) } end
    return nil
  elseif alg == 'S' then
    local v, n = read_subwindows(key)
    if not v then return nil end
    local list = {}
    for k = 1, n, 2 do list[#list + 1] = { v[k], v[k + 1] } end
    return list
  elseif alg == 'L' then
    local list, expired = load_leases(key)
    expired_at_load[key] = expired
    return list
  elseif alg == 'P' then
    return load_shares(key)
  end
  local v = redis.call('GET', key)
  if v then return tonumber(v) end
  return nil
end

-- When a state stops carrying information (algorithm::expires_at), in microseconds.
local function expires_at(h, st)
  if h.alg == 'F' then
    local _, stop = window_at(h.period, st[1])
    return stop * SEC
  elseif h.alg == 'S' then
    local width = nominal_secs(h.period) * SEC / SUB
    return (st[#st][1] + SUB + 1) * width
  elseif h.alg == 'L' then
    return st[#st][1] + nominal_secs(h.period) * SEC
  elseif h.alg == 'P' then
    return (st.s + 2 * nominal_secs(h.period)) * SEC
  end
  return st
end

local function store(key, h, st)
  local empty = st == nil or ((h.alg == 'S' or h.alg == 'L') and #st == 0)
  local at = (not empty) and expires_at(h, st) or 0
  if h.alg == 'L' then
    reclaimed = reclaimed + (expired_at_load[key] or 0)
    expired_at_load[key] = 0
  end
  if empty or at <= clock_now then
    redis.call('DEL', key)
    return
  end
  -- A fixed window still in the window it was loaded in keeps its key's TTL (HSET leaves it):
  -- only the count changes, and PEXPIRE would set the same instant again.
  local was = original[key]
  if h.alg == 'F' and was and was[1] == st[1] then
    redis.call('HSET', key, 'n', int(st[2]))
    return
  end
  -- Likewise a sliding window whose newest sub-window alone changed its count (the others as
  -- loaded, none expired since): that count is rewritten in place, and the TTL, which follows the
  -- newest sub-window, stays. Packing the whole list and a SET with PX are the slow part.
  if h.alg == 'S' and was and #was == #st then
    local n = #st
    local same = was[n][1] == st[n][1]
    for k = 1, n - 1 do
      if not same then break end
      same = was[k][1] == st[k][1] and was[k][2] == st[k][2]
    end
    if same then
      rewrite_newest(key, n, st[n][2])
      return
    end
  end
  if h.alg == 'F' then
    redis.call('HSET', key, 'w', int(st[1]), 'n', int(st[2]))
  elseif h.alg == 'S' then
    -- The whole list in one value, its TTL in the same command.
    set_until(key, pack_subwindows(st), at)
    return
  elseif h.alg == 'L' then
    redis.call('DEL', key)
    local args = {}
    for _, l in ipairs(st) do args[#args + 1] = int(l[1]); args[#args + 1] = l[2] end
    redis.call('ZADD', key, unpack(args))
  elseif h.alg == 'P' then
    store_shares(key, st)
  else
    -- A token bucket's TAT and its TTL in one command.
    set_until(key, int(st), at)
    return
  end
  if expire then
    redis.call('PEXPIRE', key, ttl_until(at))
  end
end


-- One request: its keys from KEYS[first_key + 1] and its n hits' arguments from
-- ARGV[first_arg]; returns its reply.
local function decide(first_key, first_arg, n)
  -- Pass 1: read each key once, step every hit in batch order (a repeated key sees the earlier
  -- hits applied).
  expired_at_load, reclaimed, original = {}, 0, {}
  local hits, states, loaded, reply, keys = {}, {}, {}, {}, {}
  for i = 1, n do
    local key = KEYS[first_key + i]
    keys[i] = key
    local at = first_arg + (i - 1) * 7
    local h = {
      alg = ARGV[at], period = parse_period(ARGV[at + 1]), limit = tonumber(ARGV[at + 2]),
      burst = tonumber(ARGV[at + 3]), delta = tonumber(ARGV[at + 4]), role = ARGV[at + 5],
    }
    -- Overflow of hit k: 'O' and k (1-based).
    if string.sub(h.role, 1, 1) == 'O' then
      h.of = tonumber(string.sub(h.role, 2))
      h.role = 'O'
    end
    -- The claim: '' for none, 'L' and a lease id, or 'T', the weight, ':' and the tenant id.
    local claim = ARGV[at + 6]
    local kind = string.sub(claim, 1, 1)
    if kind == 'L' then
      h.lease = string.sub(claim, 2)
    elseif kind == 'T' then
      local colon = string.find(claim, ':', 2, true)
      h.weight = tonumber(string.sub(claim, 2, colon - 1))
      h.tenant = string.sub(claim, colon + 1)
    end
    -- A fair-share hit without a tenant acts for the empty tenant at weight 0
    -- (algorithm::UNTRACKED).
    if h.alg == 'P' and not h.tenant then h.weight, h.tenant = 0, '' end
    hits[i] = h
    if not loaded[key] then
      local st = load(key, h.alg)
      -- A counter past its expiry reads as absent, as in the memory store, also when the time is
      -- pinned (no TTLs) or a TTL rounded up to the millisecond has not fired yet. (Pools judge
      -- their own leases and windows.)
      local counter = h.alg == 'F' or h.alg == 'S' or h.alg == 'T'
      if st and counter and expires_at(h, st) <= clock_now then
        st = nil
      end
      states[key] = st
      original[key] = states[key]
      loaded[key] = true
    end
    local r, next_state, changed = STEP[h.alg](h, states[key], h.delta)
    h.next, h.changed = next_state, changed
    states[key] = next_state
    reply[i] = r
  end

  -- Decide, exactly like storage::rejects: an overflow hit that fits rescues the hit it belongs
  -- to; then an enforced hit over rejects, as does a request whose quota hits are all over.
  local rescued = {}
  for i = 1, n do
    local h = hits[i]
    if h.role == 'O' and reply[i][3] == 0 and reply[h.of][3] == 1 then rescued[h.of] = true end
  end
  local enforce_over, any_quota, all_quota_over = false, false, true
  for i = 1, n do
    local over = reply[i][3] == 1 and not rescued[i]
    if hits[i].role == 'E' then
      enforce_over = enforce_over or over
    elseif hits[i].role == 'Q' then
      any_quota = true
      all_quota_over = all_quota_over and over
    end
  end

  local rejected = enforce_over or (any_quota and all_quota_over)
  local charged = (charge_all or not rejected) and not dry

  -- storage::Verdict::writes: which charged hits write their state.
  local function writes(i)
    local h = hits[i]
    if h.alg == 'L' and h.delta > 0 and rejected then return false end
    if h.role == 'O' then
      return rescued[h.of] or (charge_all and reply[h.of][3] == 1)
    end
    return not rescued[i]
  end

  -- Nothing was written before this point (GUARDED batches rely on it).
  writing = true
  -- Pass 2: write each key's state once: that of its last hit that writes (a look writes
  -- nothing; like the memory store, a hit that left its state as it found it writes that state).
  if charged then
    local final = {}
    for i = 1, n do
      if hits[i].delta ~= 0 and writes(i) then final[keys[i]] = i end
    end
    for key, i in pairs(final) do
      store(key, hits[i], hits[i].next)
    end
  elseif not dry then
    -- Nothing charged, but fair-share pools record the arrivals (algorithm::uncharged).
    local arrived = {}
    for i = 1, n do
      local h, key = hits[i], keys[i]
      if h.alg == 'P' and h.delta > 0 then
        if arrived[key] == nil then arrived[key] = { h = h, st = original[key] } end
        arrived[key].st = share_arrival(h, arrived[key].st, h.delta)
        arrived[key].h = h
      end
    end
    for key, a in pairs(arrived) do
      store(key, a.h, a.st)
    end
  end

  local out = { charged and 1 or 0, reclaimed }
  for i = 1, n do
    for k = 1, 6 do out[#out + 1] = reply[i][k] end
  end
  -- The time the hits were stepped at, so a charge can be undone precisely.
  out[#out + 1] = now
  return out
end
