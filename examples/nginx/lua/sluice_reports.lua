-- Reports the latency and status of every response the upstream gave to Sluice's POST /reports,
-- for adaptive limits (docs/adaptive.md). Loaded by openresty.conf:
--
--   lua_package_path "$prefix/lua/?.lua;;";
--   init_worker_by_lua_block { require("sluice_reports").start({ sluice = "127.0.0.1:8080" }) }
--   location / { log_by_lua_block { require("sluice_reports").log("upstream", "app") } ... }
--
-- The log phase may not open connections (no cosockets there), so each worker keeps its reports
-- in a table of this module (one Lua VM per worker: no lock, no shared dict) and a timer posts
-- them: every `every` seconds, and at once when `batch` reports wait. At most `max_pending`
-- wait; past that, and when Sluice cannot take a batch, reports are dropped, never retried: a
-- late report would land in a later interval of the controller and skew it. What was dropped
-- is counted and written to the error log at most every 10 s per worker.
--
-- Only stock lua-nginx-module is needed (Debian's libnginx-mod-http-lua): the JSON is built by
-- hand and the POST is raw HTTP/1.1 on ngx.socket.tcp, kept alive between batches.

local _M = {}

local conf = {
    host = "127.0.0.1",
    port = 8080,
    domain = "nginx-edge",
    -- Reports per POST. Sluice takes up to 5000 and 1 MiB; smaller batches keep each POST short.
    batch = 500,
    -- Reports waiting in one worker; more are dropped.
    max_pending = 10000,
    -- Seconds between flushes; Sluice's adaptive intervals are 1 s at the shortest.
    every = 1,
    -- Milliseconds for the connect, the send and each read.
    timeout = 2000,
}

-- Under Sluice's 1 MiB, whatever the descriptor values' length.
local MAX_BODY = 900 * 1024
-- Seconds between two lines about lost reports in the error log.
local LOG_EVERY = 10

local pending = {} -- this worker's reports, each its JSON text
local queued = false -- a flush of a full batch is scheduled
local running = false -- a flush is posting
local lost = { dropped = 0, unmatched = 0, why = nil, logged_at = 0 }

-- A JSON string literal: quotes, backslashes and control characters escaped.
local function json_string(s)
    return '"' .. tostring(s):gsub('[%c"\\]', function(c)
        return string.format("\\u%04x", c:byte())
    end) .. '"'
end

local function drop(n, why)
    lost.dropped = lost.dropped + n
    lost.why = why
end

-- At most one line per LOG_EVERY seconds, with the counts since the last one.
local function log_losses()
    local now = ngx.now()
    if lost.dropped + lost.unmatched == 0 or now - lost.logged_at < LOG_EVERY then
        return
    end
    if lost.dropped > 0 then
        ngx.log(ngx.WARN, "sluice reports: dropped ", lost.dropped, " (last: ", lost.why, ")")
    end
    if lost.unmatched > 0 then
        ngx.log(ngx.WARN, "sluice reports: ", lost.unmatched, " matched no adaptive rule of ",
            "domain ", conf.domain, ": check the descriptor against the rules")
    end
    lost.dropped, lost.unmatched, lost.why, lost.logged_at = 0, 0, nil, now
end

-- POSTs one body; Sluice's answer on 200, else nil and why.
local function post(body)
    local sock = ngx.socket.tcp()
    sock:settimeout(conf.timeout)
    local ok, err = sock:connect(conf.host, conf.port)
    if not ok then
        return nil, "cannot connect to Sluice: " .. err
    end
    ok, err = sock:send({ "POST /reports HTTP/1.1\r\nHost: ", conf.host,
        "\r\nContent-Type: application/json\r\nContent-Length: ", #body, "\r\n\r\n", body })
    if not ok then
        sock:close()
        return nil, "cannot send to Sluice: " .. err
    end
    local status_line
    status_line, err = sock:receive("*l")
    if not status_line then
        sock:close()
        return nil, "no answer from Sluice: " .. err
    end
    local length, reuse = 0, true
    while true do
        local line
        line, err = sock:receive("*l")
        if not line then
            sock:close()
            return nil, "Sluice's answer was cut short: " .. err
        end
        if line == "" then
            break
        end
        local name, value = line:match("^([^:]+):%s*(.-)%s*$")
        name = name and name:lower()
        if name == "content-length" then
            length = tonumber(value) or 0
        elseif name == "connection" and value:lower() == "close" then
            reuse = false
        elseif name == "transfer-encoding" then
            -- Sluice sends a length; anything else is left unread and the connection closed.
            length, reuse = 0, false
        end
    end
    local answer = ""
    if length > 0 then
        answer, err = sock:receive(length)
        if not answer then
            sock:close()
            return nil, "Sluice's answer was cut short: " .. err
        end
    end
    if reuse then
        sock:setkeepalive(60000, 4)
    else
        sock:close()
    end
    if not status_line:match("^HTTP/%d%.%d 200 ") then
        -- A 400 names the report it refused; the batch is lost, so the error log says why.
        return nil, "Sluice answered " .. status_line .. ": " .. answer
    end
    return answer
end

-- Posts what is waiting now in batches; what arrives meanwhile waits for the next flush.
local function send_pending()
    local all = pending
    pending = {}
    local prefix = '{"domain":' .. json_string(conf.domain) .. ',"reports":['
    local first = 1
    while first <= #all do
        local last, bytes = first, #prefix + #all[first]
        while last < #all and last - first + 1 < conf.batch and bytes + #all[last + 1] < MAX_BODY do
            last = last + 1
            bytes = bytes + #all[last] + 1
        end
        local answer, err = post(prefix .. table.concat(all, ",", first, last) .. "]}")
        if not answer then
            -- Sluice cannot take them now: the rest of this flush is dropped too rather than
            -- waiting out one timeout per batch.
            drop(#all - first + 1, err)
            return
        end
        lost.unmatched = lost.unmatched + (tonumber(answer:match('"unmatched":(%d+)')) or 0)
        first = last + 1
    end
end

-- The timer: premature when the worker exits, which still sends what waits.
local function flush(premature)
    queued = false
    if running then
        return
    end
    running = true
    local ok, err = pcall(send_pending)
    running = false
    if not ok then
        ngx.log(ngx.ERR, "sluice reports: ", err)
    end
    if not premature then
        log_losses()
    end
end

-- Starts this worker's periodic flush (init_worker_by_lua). `opts` overrides `conf` above;
-- `sluice = "host:port"` is Sluice's HTTP listener, an address (a name would need a `resolver`).
function _M.start(opts)
    for k, v in pairs(opts or {}) do
        if k == "sluice" then
            local host, port = v:match("^(.+):(%d+)$")
            conf.host, conf.port = host, tonumber(port)
        else
            conf[k] = v
        end
    end
    local ok, err = ngx.timer.every(conf.every, flush)
    if not ok then
        ngx.log(ngx.ERR, "sluice reports: cannot start the flush timer: ", err)
    end
end

-- Queues a report of this request (log_by_lua), with the descriptor `key1, value1, key2, ...`.
--
-- Only a response from the upstream is reported: a request refused by Sluice in the access
-- phase, or answered by NGINX itself, has no $upstream_response_time. After retries
-- (proxy_next_upstream) the variables hold one value per attempt, "0.001, 0.250", and an
-- internal redirect adds " : " and the next location's: the last attempt is reported, the one
-- whose response the client got, so latency and status describe one response. (The failed
-- attempts before it ended at NGINX: a refused connection, a timeout, a status that made NGINX
-- try the next server.) $upstream_status has the status; when it holds no number, $status.
function _M.log(...)
    local seconds = tonumber((ngx.var.upstream_response_time or ""):match("([^%s,:]+)%s*$"))
    -- Sluice refuses a batch with a latency past an hour.
    if not seconds or seconds < 0 or seconds > 3600 then
        return
    end
    local status = tonumber((ngx.var.upstream_status or ""):match("(%d+)%s*$")) or ngx.status
    if not status or status < 100 or status > 599 then
        return
    end
    local n = select("#", ...)
    if n == 0 or n % 2 == 1 then
        return
    end
    local entries = {}
    for i = 1, n, 2 do
        local key, value = select(i, ...)
        -- An entry without a value is no descriptor Sluice can match.
        if not value or value == "" then
            return
        end
        entries[#entries + 1] = '{"key":' .. json_string(key) .. ',"value":' .. json_string(value) .. '}'
    end
    if #pending >= conf.max_pending then
        drop(1, "more than " .. conf.max_pending .. " reports waiting")
        return
    end
    pending[#pending + 1] = '{"descriptor":[' .. table.concat(entries, ",") .. '],"latency_ms":'
        .. string.format("%.3f", seconds * 1000) .. ',"status":' .. status .. '}'
    if #pending >= conf.batch and not queued and not running then
        local ok, err = ngx.timer.at(0, flush)
        if ok then
            queued = true
        else
            ngx.log(ngx.WARN, "sluice reports: cannot schedule a flush: ", err)
        end
    end
end

return _M
