-- GET tracked links (one path per line of the file given after --), each in turn;
-- counts answers other than 302, and prints one RESULT line.
local paths, n, bad = {}, 0, 0

function init(args)
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
end

function request()
  n = n + 1
  return wrk.format("GET", paths[(n % #paths) + 1])
end

function response(status, headers, body)
  if status ~= 302 then bad = bad + 1 end
end

function done(summary, latency, requests)
  io.write(string.format(
    "RESULT ok=%d bad=%d requests=%d duration_us=%d p50_ms=%.2f p99_ms=%.2f\n",
    summary.requests - bad, bad, summary.requests, summary.duration,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
