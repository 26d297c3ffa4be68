-- The compact forms of the commonest request, one enforced hit on a fixed window, a token bucket
-- or a sliding window of a period in seconds, no claim, all-or-nothing or dry, spending delta >= 0
-- units (scripts.rs `Compact`): the same read, decision and write as the general form's decide
-- makes for it, without the tables that several hits, roles and claims need, and without the
-- general form's functions (made only when a call needs them). A fixed window and a token bucket
-- reply { charged, the state as loaded, now }, and the caller steps that state with the same
-- algorithm in Rust for the reading; either way scripts.rs checks that both agree on the decision.

-- A sliding window's sub-windows as stored: big-endian doubles (index, count), 16 bytes a pair,
-- oldest first. Shared by the compact form and the general one (batch.lua).

-- The stored doubles as one flat list, and how many there are (nil and 0 when absent).
local function read_subwindows(key)
  local packed = redis.call('GET', key)
  if not packed then return nil, 0 end
  local n = #packed / 8
  -- (unpack also returns the position after the last value: not a value.)
  return { struct.unpack(string.rep('>d', n), packed) }, n
end

-- A list of { index, count } packed for storing.
local function pack_subwindows(list)
  local parts = {}
  for _, s in ipairs(list) do parts[#parts + 1] = struct.pack('>d>d', s[1], s[2]) end
  return table.concat(parts)
end

-- Rewrites the count of the newest of `pairs` stored sub-windows in place: the TTL, which
-- follows the newest sub-window, stays.
local function rewrite_newest(key, pairs, count)
  redis.call('SETRANGE', key, pairs * 16 - 8, struct.pack('>d', count))
end

-- ARGV from `at`: the period (seconds), the limit, delta. Replies the count the current window
-- held (0 for another window's count or none).
local function decide_fixed(first_key, at)
  local key = KEYS[first_key + 1]
  local secs, limit, delta = tonumber(ARGV[at]), tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  local v = redis.call('HMGET', key, 'w', 'n')
  local now_s = idiv(now, SEC)
  local start = now_s - math.fmod(now_s, secs)
  -- A count of the current window is live (its end is still ahead); any other window's reads
  -- as none and is replaced whole.
  local current = tonumber(v[1]) == start
  local before = current and tonumber(v[2]) or 0
  local charged = before + delta <= limit and not dry
  writing = true
  if charged and delta > 0 then
    if current then
      redis.call('HSET', key, 'n', int(before + delta))
    else
      redis.call('HSET', key, 'w', int(start), 'n', int(before + delta))
      if expire then
        redis.call('PEXPIRE', key, ttl_until((start + secs) * SEC))
      end
    end
  end
  return { charged and 1 or 0, before, now }
end

-- ARGV from `at`: the period (seconds), the limit, the burst, delta. Replies the TAT as loaded
-- (0 for none or one already past). The arithmetic is gcra's, in the same order (same bits).
local function decide_bucket(first_key, at)
  local key = KEYS[first_key + 1]
  local secs, limit = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
  local burst, delta = tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3])
  local tat = tonumber(redis.call('GET', key))
  if tat and tat <= clock_now then tat = nil end
  local debt = 0
  if tat and tat > now then debt = tat - now end
  -- A bucket without a rate admits only looks.
  local fits, need = delta == 0, 0
  if limit ~= 0 then
    local t = secs * SEC / limit
    need = debt + delta * t
    fits = need <= burst * t
  end
  local charged = fits and not dry
  writing = true
  if charged and delta > 0 then
    local next_tat = now + math.ceil(need)
    set_until(key, int(next_tat), next_tat)
  end
  return { charged and 1 or 0, tat or 0, now }
end

-- ARGV from `at`: the period (seconds), the limit, delta. Unlike the other two it replies the
-- reading's parts a Rust step could not make without the sub-windows: { charged, used_before,
-- wait, reset, now } (sliding's arithmetic, in the same order).
local function decide_sliding(first_key, at)
  local key = KEYS[first_key + 1]
  local secs, limit, delta = tonumber(ARGV[at]), tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  local width = secs * SEC / SUB
  local current = idiv(now, width)
  local oldest = math.max(current - SUB, 0)
  -- The sub-windows still counted, oldest first, as { index, count } pairs in one flat list.
  local v, stored = read_subwindows(key)
  local live, used_before = {}, 0
  for k = 1, stored, 2 do
    if v[k] >= oldest then
      live[#live + 1] = v[k]; live[#live + 1] = v[k + 1]
      used_before = used_before + v[k + 1]
    end
  end
  local used_after = used_before + delta
  local over = used_after > limit
  local function leaves_in(i) return math.max((i + SUB + 1) * width - now, 0) end
  local wait = 0
  if over then
    local excess, freed, found = used_after - limit, 0, false
    for k = 1, #live, 2 do
      freed = freed + live[k + 1]
      if freed >= excess then wait = leaves_in(live[k]); found = true; break end
    end
    if not found then wait = leaves_in(math.max(live[#live - 1] or current, current)) end
  end
  local reset = 0
  if delta > 0 then
    reset = leaves_in(math.max(live[#live - 1] or current, current))
  elseif #live > 0 then
    reset = leaves_in(live[#live - 1])
  end
  local charged = not over and not dry
  writing = true
  if charged and delta > 0 then
    if #live == stored and live[#live - 1] == current then
      -- Only the newest sub-window's count changes (see store).
      rewrite_newest(key, #live / 2, live[#live] + delta)
    else
      local list, merged = {}, false
      for k = 1, #live, 2 do
        if live[k] == current then
          list[#list + 1] = { current, live[k + 1] + delta }; merged = true
        else
          if not merged and live[k] > current then
            list[#list + 1] = { current, delta }; merged = true
          end
          list[#list + 1] = { live[k], live[k + 1] }
        end
      end
      if not merged then list[#list + 1] = { current, delta } end
      -- The whole list, until its newest sub-window leaves.
      set_until(key, pack_subwindows(list), (list[#list][1] + SUB + 1) * width)
    end
  end
  return { charged and 1 or 0, used_before, wait, reset, now }
end
