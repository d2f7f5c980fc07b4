-- wrk script: every request carries the next token of a pre-signed list, never one
-- sent before (each thread takes every THREADS-th line, starting at its own).
--
--   wrk -t2 ... -s fresh.lua URL -- TOKENS_FILE THREADS
--
-- done() prints "fresh tokens: sent N, repeated M"; M > 0 means the list ran out
-- and tokens were sent again (run_served.sh then fails).

local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local path, nthreads = args[1], tonumber(args[2])
  tokens = {}
  local i = 0
  for line in io.lines(path) do -- bounded by the file
    if i % nthreads == id and #line > 0 then
      tokens[#tokens + 1] = "Bearer " .. line
    end
    i = i + 1
  end
  if #tokens == 0 then
    error("no tokens for thread " .. id .. " in " .. path)
  end
  sent, repeated = 0, 0
end

function request()
  sent = sent + 1
  local n = sent
  if n > #tokens then
    repeated = repeated + 1
    n = (n - 1) % #tokens + 1
  end
  return wrk.format("GET", nil, { ["Authorization"] = tokens[n] })
end

function done(summary, latency, requests)
  local total_sent, total_repeated = 0, 0
  for _, thread in ipairs(threads) do
    total_sent = total_sent + thread:get("sent")
    total_repeated = total_repeated + thread:get("repeated")
  end
  io.write(string.format("fresh tokens: sent %d, repeated %d\n", total_sent, total_repeated))
end
