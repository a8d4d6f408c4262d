-- The benchmark's form call for wrk, with every answer checked.
--
--   wrk -t2 -c128 -d30s --latency -s bench_wrk.lua http://127.0.0.1:20000/
--
-- Each request calls IHelloService.hash(P), P being 0 to 1023 random alphanumeric characters (new per
-- request). The script computes the expected reply itself, Java's String.hashCode of P (for ASCII
-- one UTF-16 unit per byte; h = (31 * h + unit) mod 2^32 is exact in LuaJIT's doubles, made a signed
-- int32 at the end), and checks every response:
--
-- * Without any help from the server: each thread keeps a multiset of the expected replies of its
--   requests in flight. A 2xx body must be one of them (which is then removed). A thread's responses
--   come only from its own connections, so a wrong number almost never passes (a few hundred values
--   in flight out of 2^32).
-- * With the echo: the request carries "X-Request-Id: <expected reply>". When a response echoes the
--   header (the consumer sidecar and the plain HTTP backend do; nginx passes it through), its body
--   must equal it exactly, which also catches two answers swapped between requests of one thread.
--
-- A 2xx response failing either check is a mismatch. Non-2xx responses are counted by status and not
-- checked. 2xx responses are also counted by their X-Provider header, when they have one (the demo's
-- consumer sidecar names the provider that answered). done() prints one line: the marker BENCH_WRK_RESULT and a JSON object with the counts over
-- all threads, wrk's own error counts and its latency percentiles in microseconds (parsed by
-- sidecar/tools/wrk.py). "outstanding" is the requests never answered: those in flight when the run ended,
-- lost ones, and the one request wrk builds at start to check the script (never sent).

local MARKER = "BENCH_WRK_RESULT "
local PREFIX = "interface=com.alibaba.dubbo.performance.demo.provider.IHelloService&method=hash"
    .. "&parameterTypesString=Ljava%2Flang%2FString%3B&parameter="
local MAX_LENGTH = 1023
local TWO_32 = 4294967296
local TWO_31 = 2147483648

-- -- setup: runs in the main script environment, once per thread --------------------------------------

local threads = {}

function setup(thread)
    threads[#threads + 1] = thread
    thread:set("thread_number", #threads)
end

-- -- running: one environment per thread ------------------------------------------------------------

local random = math.random
local char = string.char
local unpack = unpack or table.unpack
local alphabet = {}
local units = {}
local in_flight = {} -- expected reply (string) -> how many requests in flight expect it
local headers = {}

-- Read by done() through thread:get, which copies a global. Two flat tables: the wrk 4.1.0 of Debian
-- crashes copying a table nested in another one.
counts = { sent = 0, responses = 0, mismatches = 0, echoed = 0, outstanding = 0 }
statuses = {} -- status -> responses
providers = {} -- X-Provider of a 2xx answer (the demo's consumer names the provider) -> answers

function init(args)
    local letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    for i = 1, #letters do
        alphabet[i] = letters:byte(i)
    end
    -- A different sequence per thread (and per run): the thread's number and a table's address.
    local address = tonumber(tostring({}):match("0x(%x+)") or "0", 16) or 0
    math.randomseed((os.time() % 1000000) * 1000 + (thread_number or 0) * 7919 + address % 1000003)
    for _ = 1, 10 do
        random() -- the first values after seeding are poorly mixed
    end
end

local function expect(key)
    in_flight[key] = (in_flight[key] or 0) + 1
    counts.outstanding = counts.outstanding + 1
end

local function take(key)
    local n = in_flight[key]
    if n == nil then
        return false
    end
    in_flight[key] = n > 1 and n - 1 or nil
    counts.outstanding = counts.outstanding - 1
    return true
end

function request()
    local n = random(0, MAX_LENGTH)
    local h = 0
    for i = 1, n do
        local unit = alphabet[random(1, 62)]
        units[i] = unit
        h = (h * 31 + unit) % TWO_32
    end
    if h >= TWO_31 then
        h = h - TWO_32
    end
    local expected = string.format("%d", h)
    expect(expected)
    counts.sent = counts.sent + 1
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    headers["X-Request-Id"] = expected
    return wrk.format("POST", nil, headers, PREFIX .. char(unpack(units, 1, n)))
end

local function header(response_headers, name, lower)
    local value = response_headers[name]
    if value ~= nil then
        return value
    end
    for key, v in pairs(response_headers) do -- header names arrive as the server wrote them
        if key:lower() == lower then
            return v
        end
    end
    return nil
end

function response(status, response_headers, body)
    counts.responses = counts.responses + 1
    statuses[status] = (statuses[status] or 0) + 1
    local echoed = header(response_headers, "X-Request-Id", "x-request-id")
    local ok
    if echoed ~= nil then
        counts.echoed = counts.echoed + 1
        ok = take(echoed) and body == echoed
    elseif status >= 200 and status < 300 then
        ok = take(body)
    end
    if status >= 200 and status < 300 then
        if not ok then
            counts.mismatches = counts.mismatches + 1
        end
        local provider = header(response_headers, "X-Provider", "x-provider")
        if provider ~= nil then
            providers[provider] = (providers[provider] or 0) + 1
        end
    end
end

-- -- done: back in the main environment -------------------------------------------------------------

local function json_object(pairs_list, quoted)
    local parts = {}
    for _, pair in ipairs(pairs_list) do
        -- a quoted key is already a JSON string
        parts[#parts + 1] = string.format(quoted and "%s:%s" or '"%s":%s', pair[1], pair[2])
    end
    return "{" .. table.concat(parts, ",") .. "}"
end

local function integer(x)
    return string.format("%d", x)
end

function done(summary, latency, _)
    local total = { sent = 0, responses = 0, mismatches = 0, echoed = 0, outstanding = 0 }
    local by_status = {}
    local by_provider = {}
    for _, thread in ipairs(threads) do
        local c = thread:get("counts")
        for key in pairs(total) do
            total[key] = total[key] + (c[key] or 0)
        end
        for status, n in pairs(thread:get("statuses")) do
            by_status[status] = (by_status[status] or 0) + n
        end
        for provider, n in pairs(thread:get("providers")) do
            by_provider[provider] = (by_provider[provider] or 0) + n
        end
    end
    local status_fields = {}
    for status, n in pairs(by_status) do
        status_fields[#status_fields + 1] = { integer(status), integer(n) }
    end
    table.sort(status_fields, function(a, b)
        return a[1] < b[1]
    end)
    local provider_fields = {}
    for provider, n in pairs(by_provider) do
        provider_fields[#provider_fields + 1] = { '"' .. provider:gsub('[%c"\\]', "?") .. '"', integer(n) }
    end
    table.sort(provider_fields, function(a, b)
        return a[1] < b[1]
    end)
    local e = summary.errors
    print(MARKER .. json_object({
        { "requests", integer(summary.requests) },
        { "duration_us", integer(summary.duration) },
        { "sent", integer(total.sent) },
        { "responses", integer(total.responses) },
        { "mismatches", integer(total.mismatches) },
        { "echoed", integer(total.echoed) },
        { "outstanding", integer(total.outstanding) },
        { "statuses", json_object(status_fields) },
        { "providers", json_object(provider_fields, true) },
        {
            "socket_errors",
            json_object({
                { "connect", integer(e.connect) },
                { "read", integer(e.read) },
                { "write", integer(e.write) },
                { "timeout", integer(e.timeout) },
            }),
        },
        { "p50_us", integer(latency:percentile(50)) },
        { "p90_us", integer(latency:percentile(90)) },
        { "p99_us", integer(latency:percentile(99)) },
        { "mean_us", string.format("%.1f", latency.mean) },
        { "max_us", integer(latency.max) },
    }))
end
