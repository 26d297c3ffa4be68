-- The calendar and the counter algorithms (fixed and sliding windows, GCRA), for the general
-- form of the batch script and for the queue script.
-- Calendar arithmetic (algorithm/calendar.rs).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function civil_from_days(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m
end

local NOMINAL = { D = DAY, W = 7 * DAY, M = 30 * DAY, Y = 365 * DAY }

-- A period is seconds ('60') or a calendar unit and count ('M1').
local function parse_period(text)
  local n = tonumber(text)
  if n then return { secs = n } end
  return { unit = string.sub(text, 1, 1), count = tonumber(string.sub(text, 2)) }
end

local function nominal_secs(p)
  if p.secs then return p.secs end
  return NOMINAL[p.unit] * p.count
end

local function floor_multiple(x, n)
  return x - (x % n)
end

local function month_start(index)
  return days_from_civil(1970 + math.floor(index / 12), index % 12 + 1, 1)
end

-- The fixed window containing now_s: start and end in seconds.
local function window_at(p, now_s)
  if p.secs then
    local start = now_s - math.fmod(now_s, p.secs)
    return start, start + p.secs
  end
  local n = p.count
  local day = idiv(now_s, DAY)
  local s, e
  if p.unit == 'D' then
    s = floor_multiple(day, n); e = s + n
  elseif p.unit == 'W' then
    local w = floor_multiple(math.floor((day + 3) / 7), n)
    s = w * 7 - 3; e = (w + n) * 7 - 3
  elseif p.unit == 'M' then
    local y, m = civil_from_days(day)
    local i = floor_multiple((y - 1970) * 12 + m - 1, n)
    s = month_start(i); e = month_start(i + n)
  else
    local y = civil_from_days(day)
    local i = floor_multiple(y - 1970, n)
    s = days_from_civil(1970 + i, 1, 1); e = days_from_civil(1970 + i + n, 1, 1)
  end
  return s * DAY, e * DAY
end

-- `borrowing`: a fair-share hit past its tenant's guarantee (algorithm::Reading::borrowing).
local function reading(used_before, used_after, over, wait, reset, borrowing)
  return { used_before, used_after, over and 1 or 0, wait, reset, borrowing and 1 or 0 }
end

-- Each step returns a reading, the next state and whether that state differs from the stored one.

-- Fixed window; state { start, count } (algorithm/mod.rs `fixed`).
local function fixed(h, st, delta)
  local start, stop = window_at(h.period, idiv(now, SEC))
  local until_end = stop * SEC - now
  local before = 0
  if st and st[1] == start then before = st[2] end
  local over, after = false, 0
  if delta >= 0 then
    after = before + delta
    over = after > h.limit
  else
    after = math.max(before + delta, 0)
  end
  local r = reading(before, after, over, over and until_end or 0, until_end)
  if delta == 0 or (delta < 0 and before == 0) then return r, st, false end
  return r, { start, after }, true
end

-- Sliding window; state: sorted list of { index, count } (algorithm/sliding.rs).
local function sliding(h, st, delta)
  local width = nominal_secs(h.period) * SEC / SUB
  local current = idiv(now, width)
  local oldest = math.max(current - SUB, 0)
  local live, used_before = {}, 0
  for _, b in ipairs(st or {}) do
    if b[1] >= oldest then
      live[#live + 1] = { b[1], b[2] }
      used_before = used_before + b[2]
    end
  end
  local function leaves_at(i) return (i + SUB + 1) * width end
  local function reset_of(list)
    if #list == 0 then return 0 end
    return math.max(leaves_at(list[#list][1]) - now, 0)
  end
  if delta >= 0 then
    local used_after = used_before + delta
    local over = used_after > h.limit
    local wait = 0
    if over then
      local excess, freed, found = used_after - h.limit, 0, false
      for _, b in ipairs(live) do
        freed = freed + b[2]
        if freed >= excess then
          wait = math.max(leaves_at(b[1]) - now, 0); found = true
          break
        end
      end
      if not found then
        local newest = current
        if #live > 0 then newest = math.max(live[#live][1], current) end
        wait = math.max(leaves_at(newest) - now, 0)
      end
    end
    if delta == 0 then
      return reading(used_before, used_after, over, wait, reset_of(live)), st, false
    end
    local merged = false
    for _, b in ipairs(live) do
      if b[1] == current then b[2] = b[2] + delta; merged = true end
    end
    if not merged then
      local at = #live + 1
      for k, b in ipairs(live) do
        if b[1] > current then at = k; break end
      end
      table.insert(live, at, { current, delta })
    end
    return reading(used_before, used_after, over, wait, reset_of(live)), live, true
  end
  if #live == 0 then return reading(0, 0, false, 0, 0), st, false end
  -- Newest first among the sub-windows at or before now, then any later ones (an undo).
  local upto = 0
  for k, b in ipairs(live) do
    if b[1] <= current then upto = k end
  end
  local left = -delta
  local function take_from(k)
    local take = math.min(left, live[k][2])
    live[k][2] = live[k][2] - take
    left = left - take
  end
  for k = upto, 1, -1 do take_from(k) end
  for k = upto + 1, #live do take_from(k) end
  local kept, used_after = {}, 0
  for _, b in ipairs(live) do
    if b[2] > 0 then kept[#kept + 1] = b; used_after = used_after + b[2] end
  end
  return reading(used_before, used_after, false, 0, reset_of(kept)), kept, true
end

-- Token bucket as GCRA; state: the TAT in microseconds (algorithm/gcra.rs). It works on the
-- debt (how long until the bucket is full), combining doubles in the same order as in Rust, so
-- both produce the same bits.
local function gcra(h, st, delta)
  local period = nominal_secs(h.period) * SEC
  local burst = h.burst
  local debt = 0
  if st and st > now then debt = st - now end
  if h.limit == 0 then
    local over = delta > 0
    return reading(burst, burst, over, over and period or 0, 0), st, false
  end
  local t = period / h.limit
  local tau = burst * t
  local function fits(d, k) return d + k * t <= tau end
  local function tokens(d)
    local k = math.floor((tau - d) / t)
    if k <= 0 then k = 0 elseif k > burst then k = burst end
    if k < burst and fits(d, k + 1) then
      k = k + 1
    elseif k > 0 and not fits(d, k) then
      k = k - 1
    end
    return k
  end
  local used_before = burst - tokens(debt)
  if delta >= 0 then
    local need = debt + delta * t
    if need > tau then
      local wait = math.ceil(need - tau)
      if delta <= burst then
        if wait > 0 and fits(math.max(debt - (wait - 1), 0), delta) then
          wait = wait - 1
        elseif not fits(math.max(debt - wait, 0), delta) then
          wait = wait + 1
        end
      end
      local r = reading(used_before, used_before, true, wait, debt)
      if force then return r, now + math.ceil(need), true end
      return r, st, false
    end
    if delta == 0 then
      return reading(used_before, used_before, false, 0, debt), st, false
    end
    local new_debt = math.ceil(need)
    return reading(used_before, burst - tokens(new_debt), false, 0, new_debt), now + new_debt, true
  end
  if not st then return reading(used_before, used_before, false, 0, 0), st, false end
  local back = debt - (-delta) * t
  if back <= 0 then return reading(used_before, 0, false, 0, 0), nil, true end
  local new_debt = math.ceil(back)
  return reading(used_before, burst - tokens(new_debt), false, 0, new_debt), now + new_debt, true
end

