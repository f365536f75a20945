-- wrk script: non-streaming POST /v1/completions (legacy text completions) with
-- a realistic prompt of a few hundred characters and max_tokens.  done() prints
-- one parseable line:
--   WRK_RESULT {"requests":N,"duration_us":N,"p50_us":N,...,"errors":{...}}
-- Usage: wrk -t1 -c64 -d10s -s bench/wrk/completions.lua http://127.0.0.1:PORT/v1/completions
-- BENCH_MAX_TOKENS (default 32) and BENCH_MODEL (default gpt-3.5-turbo-instruct)
-- override the body.

local max_tokens = tonumber(os.getenv("BENCH_MAX_TOKENS") or "32")
local model = os.getenv("BENCH_MODEL") or "gpt-3.5-turbo-instruct"

local prompt = "You are a concise technical assistant for a team that runs load tests against "
  .. "HTTP services.\n\nQuestion: Our gateway sits in front of an OpenAI-compatible inference "
  .. "server. Under 64 concurrent clients the p99 latency doubles while the median stays flat. "
  .. "Which queueing effects would explain that, and what should we measure first?\n\nAnswer:"

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
wrk.body = string.format(
  '{"model":"%s","prompt":"%s","max_tokens":%d,"temperature":0.7}',
  model, prompt:gsub("\n", "\\n"), max_tokens)

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,'
      .. '"p99_us":%d,"mean_us":%.1f,"max_us":%d,"errors":{"connect":%d,"read":%d,'
      .. '"write":%d,"status":%d,"timeout":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
