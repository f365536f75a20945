-- wrk script: send the request of another script (BENCH_SCRIPT, e.g. chat.lua, in this
-- directory) once and print the first answer, so the driver can check that a server
-- answers that exact request shape before measuring it:
--   PROBE_STATUS <status>
--   PROBE_BODY <length>
--   <body>
-- Usage: BENCH_SCRIPT=chat.lua wrk -t1 -c1 -d2s -s bench/wrk/probe.lua http://127.0.0.1:PORT/v1/chat/completions

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. (os.getenv("BENCH_SCRIPT") or "chat.lua"))
done = nil

local seen = false

function response(status, headers, body)
  if seen then
    return
  end
  seen = true
  body = body or ""
  io.write(string.format("PROBE_STATUS %d\nPROBE_BODY %d\n%s\n", status, #body, body))
  io.flush()
  wrk.thread:stop()
end
