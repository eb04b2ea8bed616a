-- wrk script: POSTs a 1 KiB JSON body on every request and prints a JSON summary line.
-- Closed loop: each connection sends its next request as soon as the answer came
-- (post-rate.lua offers a fixed rate instead).
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } mp_timespec;
int clock_gettime(int clk_id, mp_timespec *tp);
]]
local ts = ffi.new("mp_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local item = '{"sku":"sku-000000","qty":1,"note":"' .. string.rep("x", 40) .. '"}'
local items = {}
local size = 0
local body = ""
local i = 0
while true do
  local candidate = '{"order":"ord_000001","items":[' .. table.concat(items, ",") .. ']}'
  if #candidate + #item + 1 > 1024 then
    body = candidate .. string.rep(" ", 1024 - #candidate)
    break
  end
  items[#items + 1] = item
end

wrk.method = "POST"
wrk.path = "/orders"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["User-Agent"] = "mirrorplane-bench"

local interval = 0
local next_at = 0

function init(args)
  local rate = tonumber(args[1] or "0") or 0
  if rate > 0 then interval = 1000 / rate end
end


function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'MPJSON {"requests":%d,"durationUs":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latencyUs":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max))
end
