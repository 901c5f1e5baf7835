-- wrk script of bench/subscribe_bench.py: POST our sign-up form (no JavaScript, as a
-- browser without it does) with a new address per request; success is the 302 back
-- to the page. CSRF stays on: one session cookie and its form token, fetched first.
-- usage: wrk ... -s our_subscribe.lua URL -- RUN_ID SESSION_COOKIE CSRF_TOKEN SLUG
local threads = {}

function setup(thread)
    table.insert(threads, thread)
    thread:set("tid", #threads)
end

function init(args)
    run_id = args[1]
    n, ok, bad = 0, 0, 0
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
    wrk.headers["Cookie"] = "session=" .. args[2]
    prefix = "csrf_token=" .. args[3] .. "&newsletter=" .. args[4] .. "&source=%2F&website=&email="
end

function request()
    n = n + 1
    return wrk.format(nil, nil, nil,
        prefix .. string.format("s%s-%d-%d%%40newsroom.org", run_id, tid, n))
end

function response(status, headers, body)
    if status == 302 then ok = ok + 1 else bad = bad + 1 end
end

function done(summary, latency, requests)
    local tok, tbad = 0, 0
    for _, t in ipairs(threads) do
        tok = tok + t:get("ok")
        tbad = tbad + t:get("bad")
    end
    io.write(string.format(
        "RESULT ok=%d bad=%d requests=%d duration_us=%d p50_ms=%.2f p99_ms=%.2f errors_connect=%d errors_read=%d errors_timeout=%d\n",
        tok, tbad, summary.requests, summary.duration,
        latency:percentile(50) / 1000, latency:percentile(99) / 1000,
        summary.errors.connect, summary.errors.read, summary.errors.timeout))
end
