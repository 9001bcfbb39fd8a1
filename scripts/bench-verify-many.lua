-- wrk script for scripts/bench.sh's memory run: POST /api/v1/keys/verify,
-- each thread cycling through its own share of the keys in the file named by
-- GATEHOUSE_BENCH_KEYS_FILE (one key per line), so that every key is checked
-- once the run has sent as many requests as there are keys.
-- GATEHOUSE_BENCH_THREADS must be wrk's -t value. At the end it prints
-- "distinct keys checked: N".
local path = os.getenv("GATEHOUSE_BENCH_KEYS_FILE")
local nthreads = tonumber(os.getenv("GATEHOUSE_BENCH_THREADS") or "")
if path == nil or path == "" or nthreads == nil then
  error("GATEHOUSE_BENCH_KEYS_FILE and GATEHOUSE_BENCH_THREADS must be set")
end

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  -- This thread's share: every nthreads-th key, starting at its own id.
  mine = {}
  local i = 0
  for line in io.lines(path) do
    if i % nthreads == id then
      mine[#mine + 1] = '{"key":"' .. line .. '"}'
    end
    i = i + 1
  end
  share = #mine
  sent = 0
end

function request()
  sent = sent + 1
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json" },
    mine[(sent - 1) % share + 1])
end

function done(summary, latency, requests)
  local distinct = 0
  for _, thread in ipairs(threads) do
    distinct = distinct + math.min(thread:get("sent") or 0, thread:get("share") or 0)
  end
  io.write(string.format("distinct keys checked: %d\n", distinct))
end
