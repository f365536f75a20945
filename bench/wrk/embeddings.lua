-- wrk script: POST /v1/embeddings with BENCH_INPUTS texts (default 1) of a sentence or
-- two each, as a retrieval pipeline embeds its chunks.  done() prints one parseable line:
--   WRK_RESULT {"requests":N,"duration_us":N,"p50_us":N,...,"errors":{...}}
-- Usage: BENCH_INPUTS=64 wrk -t1 -c64 -d10s -s bench/wrk/embeddings.lua http://127.0.0.1:PORT/v1/embeddings
-- BENCH_MODEL (default text-embedding-3-small) overrides the model.

local inputs = tonumber(os.getenv("BENCH_INPUTS") or "1")
local model = os.getenv("BENCH_MODEL") or "text-embedding-3-small"

local chunk = "Under 64 concurrent clients the p99 latency of the gateway doubles while the "
  .. "median stays flat, which points at queueing in front of the inference server (chunk %d)."

local texts = {}
for i = 1, inputs do
  texts[i] = '"' .. string.format(chunk, i) .. '"'
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
wrk.body = string.format(
  '{"model":"%s","input":[%s],"encoding_format":"float"}', model, table.concat(texts, ","))

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
