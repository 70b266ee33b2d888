-- Sends pre-built raw HTTP requests (NUL-separated, file in BENCH_REQUESTS) in order, each thread
-- taking every BENCH_THREADS-th one. With BENCH_WRAP=1 the list is cycled (baselines, which store
-- nothing); otherwise no request is ever sent twice, and a thread that runs out stops and is
-- reported as "exhausted" (the harness then refuses the figure).
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local file = assert(io.open(os.getenv("BENCH_REQUESTS"), "rb"))
  local data = file:read("*a")
  file:close()
  reqs = {}
  for raw in string.gmatch(data, "([^%z]+)") do
    reqs[#reqs + 1] = raw
  end
  stride = tonumber(os.getenv("BENCH_THREADS"))
  wrap = os.getenv("BENCH_WRAP") == "1"
  index = id + 1
  acked = 0
  exhausted = 0
end

function request()
  if index > #reqs then
    if wrap then
      index = id + 1
    else
      exhausted = 1
      wrk.thread:stop()
      return "GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n"
    end
  end
  local raw = reqs[index]
  index = index + stride
  return raw
end

function response(status, headers, body)
  if status == 200 and body ~= '{"status":"ok"}' then
    acked = acked + 1
  end
end

function done(summary, latency, requests)
  local total, out = 0, 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("acked")
    out = out + thread:get("exhausted")
  end
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "acked": %d, "non2xx": %d, "errors": %d, ' ..
    '"p50_us": %d, "p99_us": %d, "exhausted": %d}\n',
    summary.requests, summary.duration, total, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), out))
end
