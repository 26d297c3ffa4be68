-- The requests in arrival order, each decided (and written) before the next is read, exactly as
-- if each were its own call. Per request: its admission, its time (empty for Redis TIME), then
-- its number of hits and seven values per hit, or a compact form's letter (F, T, S) and its values.
--
-- GUARDED (a Cluster node's batch, whose keys may belong to slots this node no longer serves):
-- a request whose reads fail wrote nothing and replies { -1 }, to be sent again by the Cluster's
-- own routing; one whose writes fail replies { -2 } (what it wrote stays). The others go on.
local replies, arg, first_key, decide = {}, FIRST_ARG, FIRST_KEY, nil
while arg <= #ARGV do
  local form = ARGV[arg + 2]
  local run, n, width
  if form == 'F' then
    run, n, width = decide_fixed, 1, 3
  elseif form == 'T' then
    run, n, width = decide_bucket, 1, 4
  elseif form == 'S' then
    run, n, width = decide_sliding, 1, 3
  else
    -- The general form's functions are made on the first request that needs them: a call of
    -- compact requests alone does not pay for them.
    decide = decide or general()
    n = tonumber(form)
    run, width = decide, 7 * n
  end
  begin_request(ARGV[arg], ARGV[arg + 1])
  if GUARDED then
    writing = false
    local ok, reply = pcall(run, first_key, arg + 3, n)
    if ok then
      replies[#replies + 1] = reply
    else
      replies[#replies + 1] = { writing and -2 or -1 }
    end
  else
    replies[#replies + 1] = run(first_key, arg + 3, n)
  end
  first_key = first_key + n
  arg = arg + 3 + width
end
return replies
