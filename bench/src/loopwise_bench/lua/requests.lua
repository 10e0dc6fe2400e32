-- loopwise bench: the one wrk script behind every scenario.
--
-- LOOPWISE_WRK_MODE=closed|paced wrk -s requests.lua URL -- REQUESTS_FILE [RATE_PER_CONNECTION]
--
-- REQUESTS_FILE holds one request per line, tab-separated:
--   weight <TAB> method <TAB> path <TAB> headers ("Name: value" joined by \031) <TAB> body
-- Each thread builds the weighted sequence once and walks it from its own offset, so
-- every server under comparison gets the same requests in the same proportions.
-- A body containing "{seq}" is formatted per request with a value unique to this wrk run,
-- thread and request (e.g. a new email for every POST /register).
--
-- MODE "closed": wrk's own closed loop; done() prints wrk's summary as one JSON line.
-- MODE "counted": the same, and done() also prints how many responses had each status.
-- MODE "paced": one connection per thread (-t equals -c), each sending at a fixed rate
-- on its own schedule. Latency is measured from when the request was *due*, not when it
-- was sent, so a stalled server cannot hide its queue behind the client's wait
-- (coordinated omission; the correction wrk2 makes). done() prints a latency histogram.

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } loopwise_timespec;
  int clock_gettime(int clock_id, loopwise_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local timespec = ffi.new("loopwise_timespec")

local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
  return tonumber(timespec.tv_sec) * 1000000 + tonumber(timespec.tv_nsec) / 1000
end

local function split(line, sep)
  local fields, start = {}, 1
  while true do
    local i = string.find(line, sep, start, true)
    if not i then
      table.insert(fields, string.sub(line, start))
      return fields
    end
    table.insert(fields, string.sub(line, start, i - 1))
    start = i + #sep
  end
end

local function load_requests(path)
  local weighted = {}
  for line in io.lines(path) do
    if #line > 0 then
      local f = split(line, "\t")
      local headers = {}
      if f[4] ~= nil and #f[4] > 0 then
        for _, h in ipairs(split(f[4], "\031")) do
          local colon = string.find(h, ":", 1, true)
          headers[string.sub(h, 1, colon - 1)] = string.gsub(string.sub(h, colon + 1), "^%s+", "")
        end
      end
      local body = f[5]
      if body ~= nil and #body == 0 then body = nil end
      local built
      if body ~= nil and string.find(body, "{seq}", 1, true) then
        built = { method = f[2], path = f[3], headers = headers, body = body }
      else
        built = wrk.format(f[2], f[3], headers, body)
      end
      for _ = 1, tonumber(f[1]) do table.insert(weighted, built) end
    end
  end
  -- Interleave deterministically so a short run still sees every kind of request.
  local n = #weighted
  math.randomseed(7)
  for i = n, 2, -1 do
    local j = math.random(i)
    weighted[i], weighted[j] = weighted[j], weighted[i]
  end
  return weighted
end

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_index", thread_count)
  table.insert(threads, thread)
end

local PACED = os.getenv("LOOPWISE_WRK_MODE") == "paced"
-- MODE "counted": the closed loop, also counting responses by status (the overload run,
-- where 503 sheds must be told apart from failures); it costs wrk its fast path.
local COUNTED = os.getenv("LOOPWISE_WRK_MODE") == "counted"
local sequence, position, interval_us, due, due_now, sent_at, nonce
local counter = 0
hist = {}
statuses = {}

function init(args)
  sequence = load_requests(args[1])
  position = ((thread_index or 1) * 7919) % #sequence
  nonce = string.format("%d-%d", math.floor(now_us()), thread_index or 1)
  if PACED then
    math.randomseed(thread_index or 1)
    interval_us = 1000000 / tonumber(args[2])
    -- Stagger the connections' schedules across one interval: no synchronised bursts.
    due = now_us() + interval_us * math.random()
  end
end

function request()
  position = position % #sequence + 1
  if PACED then sent_at = now_us() end
  local entry = sequence[position]
  if type(entry) == "table" then
    counter = counter + 1
    local body = string.gsub(entry.body, "{seq}", nonce .. "-" .. counter)
    return wrk.format(entry.method, entry.path, entry.headers, body)
  end
  return entry
end

-- Only paced runs define delay() and response(): wrk checks whether they exist, and
-- without them a closed run keeps wrk's fast path (no pacing, no Lua per response).
if PACED then
  function delay()
    due_now = due
    due = due + interval_us
    local wait = due_now - now_us()
    if wait <= 0 then return 0 end
    -- wrk's timers have millisecond resolution: round down and let the latency be
    -- measured from the earlier of "due" and "sent", so pacing never adds latency.
    return math.floor(wait / 1000)
  end

  function response(status, headers, body)
    local finished = now_us()
    local start = due_now
    if sent_at < start then start = sent_at end
    local us = finished - start
    local key
    if us < 1000 then
      key = math.floor(us)
    else
      -- Three significant digits: about 1% precision, bounded memory for any run length.
      local scale = 10 ^ (math.floor(math.log10(us)) - 2)
      key = math.floor(us / scale) * scale
    end
    hist[key] = (hist[key] or 0) + 1
    statuses[status] = (statuses[status] or 0) + 1
  end
end

if COUNTED then
  function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
  end
end

local function json_summary(summary, latency)
  local e = summary.errors
  local parts = {
    string.format('"requests":%d', summary.requests),
    string.format('"duration_us":%d', summary.duration),
    string.format('"bytes":%d', summary.bytes),
    string.format('"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}',
      e.connect, e.read, e.write, e.status, e.timeout),
    string.format('"latency_us":{"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}',
      latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9)),
  }
  return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, requests)
  print("LOOPWISE_SUMMARY " .. json_summary(summary, latency))
  for _, thread in ipairs(threads) do
    local h = thread:get("hist")
    for key, count in pairs(h or {}) do
      print(string.format("LOOPWISE_HIST %d %d", key, count))
    end
    local s = thread:get("statuses")
    for status, count in pairs(s or {}) do
      print(string.format("LOOPWISE_STATUS %d %d", status, count))
    end
  end
end
