-- Sluice: apply one request's batch of counter hits atomically. See scripts.rs for the contract.
local charge_all = ARGV[1] == 'C'
local n = #KEYS

-- Pass 1: read each counter once and decide. A key repeated in the batch sees the earlier hit
-- applied (hits apply in batch order), exactly like storage::rejects over the memory store.
local before = {}
local seen = {}
local exists = {}
local enforce_over, any_quota, all_quota_over = false, false, true
for i = 1, n do
  local key = KEYS[i]
  local at = 2 + (i - 1) * 4
  local delta = tonumber(ARGV[at])
  local limit = tonumber(ARGV[at + 1])
  local role = ARGV[at + 3]
  local b = seen[key]
  if b == nil then
    local stored = redis.call('GET', key)
    if stored then
      exists[key] = true
      b = tonumber(stored)
    else
      b = 0
    end
  end
  before[i] = b
  local after
  if delta >= 0 then
    after = b + delta
  else
    after = math.max(b + delta, 0)
  end
  seen[key] = after
  local over = delta >= 0 and after > limit
  if role == 'E' then
    enforce_over = enforce_over or over
  elseif role == 'Q' then
    any_quota = true
    all_quota_over = all_quota_over and over
  end
end

local charged = charge_all or not (enforce_over or (any_quota and all_quota_over))

-- Pass 2: write, in batch order. Deltas go over as the caller's decimal strings, never as Lua
-- numbers, which Redis would format with 14 significant digits.
if charged then
  for i = 1, n do
    local key = KEYS[i]
    local at = 2 + (i - 1) * 4
    local delta = tonumber(ARGV[at])
    if delta > 0 then
      if exists[key] then
        redis.call('INCRBY', key, ARGV[at])
      else
        -- Created here, so the expiry is set here and only here: later hits never extend it.
        redis.call('SET', key, ARGV[at], 'EX', ARGV[at + 2])
        exists[key] = true
      end
    elseif delta < 0 and exists[key] then
      -- A refund floors at zero and keeps the window's expiry; it never creates a key.
      if -delta <= before[i] then
        redis.call('INCRBY', key, ARGV[at])
      else
        redis.call('SET', key, '0', 'KEEPTTL')
      end
    end
  end
end

local reply = { charged and 1 or 0 }
for i = 1, n do
  reply[i + 1] = before[i]
end
return reply
