-- wrk script of bench/peer_signup.py (a copy of the peers' subscribe.lua): POST
-- django-newsletter's subscribe form with a unique e-mail per request. CSRF
-- protection stays on: the bench fetches one csrftoken cookie and a masked form
-- token with a GET first and sends both with every POST (Django accepts any
-- masked token of the cookie's secret, so one pair is valid for the whole run).
-- usage: wrk ... -s peer_subscribe.lua URL -- RUN_ID CSRF_COOKIE CSRF_FORM_TOKEN
local threads = {}

function setup(thread)
    table.insert(threads, thread)
    thread:set("tid", #threads)
end

function init(args)
    run_id = args[1]
    local cookie, token = args[2], args[3]
    n, ok, bad = 0, 0, 0
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
    wrk.headers["Cookie"] = "csrftoken=" .. cookie
    prefix = "csrfmiddlewaretoken=" .. token .. "&name_field=Bench+User&email_field="
end

function request()
    n = n + 1
    return wrk.format(nil, nil, nil,
        prefix .. string.format("s%s-%d-%d%%40bench.example", run_id, tid, n))
end

function response(status, headers, body)
    -- success = 302 redirect to ".../subscribe/email-sent/"
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
