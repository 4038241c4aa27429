-- wrk script: POST the same small JSON image request on every connection, then print the
-- figures as one JSON line (prefixed BENCH_JSON) for bench/wrk.py to parse.
--
--   wrk -t2 -c32 -d5s --latency -s bench/post.lua http://127.0.0.1:8000/v1/images/generations \
--       -- <bearer key> ["Header: value" ...]
--
-- Environment: BENCH_BODY overrides the body.

wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY") or '{"model":"gpt-image-1","prompt":"a red fox"}'
wrk.headers["Content-Type"] = "application/json"

function init(args)
  local key = args[1] or "gw-bench-key"
  if key ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. key
  end
  for i = 2, #args do
    local name, value = string.match(args[i], "^([^:]+):%s*(.*)$")
    if name then
      wrk.headers[name] = value
    end
  end
end

-- BENCH_STAGGER_MS: spread each connection's first request over this many ms (BENCH_CONNS_PER_THREAD
-- connections per thread), so the connections behave like independent clients instead of all
-- firing at the same instant. The wait is before sending: it is not part of any latency.
local stagger_ms = tonumber(os.getenv("BENCH_STAGGER_MS") or "0")
local conns = tonumber(os.getenv("BENCH_CONNS_PER_THREAD") or "1")
local firsts = 0

function delay()
  if stagger_ms <= 0 or firsts >= conns then
    return 0
  end
  firsts = firsts + 1
  return math.floor((firsts - 1) * stagger_ms / conns)
end

function done(summary, latency, requests)
  local e = summary.errors
  local out = string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9))
  io.write("BENCH_JSON " .. out .. "\n")
end
