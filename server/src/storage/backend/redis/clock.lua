-- Sluice's scripts: the clock and the request being decided, shared by the batch script
-- (scripts.rs) and the queue script (queue.rs). Every function in script.lua, pools.lua and
-- compact.lua mirrors its namesake in src/algorithm/, operation for operation.
local SEC = 1000000
local SUB = 20
local DAY = 86400

-- One call decides several requests in turn (batch.lua); these describe the request being
-- decided and are set by begin_request.
local mode, charge_all, force, dry
-- The clock: Redis TIME, unless the caller pinned the time (tests). Pinned time also skips
-- expiry, which only reclaims memory and follows Redis's own clock.
local now, clock_now, expire
-- Redis TIME, read once per call: every request of a call is decided at the same instant.
local redis_now

local function begin_request(admission, time)
  mode = string.sub(admission, 1, 1)
  charge_all = mode == 'C' or mode == 'R' or mode == 'U'
  force = mode == 'R'
  -- A dry run decides as 'A' would and writes nothing.
  dry = mode == 'D'
  now, expire = tonumber(time), false
  if not now then
    if not redis_now then
      local t = redis.call('TIME')
      redis_now = tonumber(t[1]) * SEC + tonumber(t[2])
    end
    now, expire = redis_now, true
  end
  -- An undo ('U' and the charge's time) steps at the time of the charge it takes back; liveness
  -- and expiry still follow the clock.
  clock_now = now
  if mode == 'U' then now = tonumber(string.sub(admission, 2)) end
end

-- Numbers go to Redis as exact decimal strings, never in Lua's %.14g.
local function int(x) return string.format('%.0f', x) end

-- Integer division of non-negative integer-valued numbers, exact in doubles.
local function idiv(a, b)
  return (a - math.fmod(a, b)) / b
end

-- A TTL for PX or PEXPIRE: whole milliseconds, rounded up, until `at` (µs).
local function ttl_until(at)
  return int(math.ceil((at - clock_now) / 1000))
end

-- Writes a string that stops carrying information at `at` (µs), its TTL in the same command
-- (none when the time is pinned).
local function set_until(key, value, at)
  if expire then
    redis.call('SET', key, value, 'PX', ttl_until(at))
  else
    redis.call('SET', key, value)
  end
end

-- Set once a request starts writing (see the loop in requests.lua).
local writing = false
