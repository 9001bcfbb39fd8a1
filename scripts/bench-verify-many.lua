-- wrk script for scripts/bench.sh's memory run: POST /api/v1/keys/verify
-- with many keys, read from the file named by GATEHOUSE_BENCH_KEYS_FILE (one
-- key per line). Thread t of n (GATEHOUSE_BENCH_THREADS, wrk's -t) takes the
-- keys t, t+n, t+2n, ... in order, starting at the key index
-- GATEHOUSE_BENCH_KEYS_START (a multiple of n; default 0) and wrapping
-- around. At the end it prints "keys covered: N": every key from the start
-- index up to start + N - 1 was sent at least once, so bench.sh can run it
-- again from there until all keys are covered.
local path = os.getenv("GATEHOUSE_BENCH_KEYS_FILE")
local nthreads = tonumber(os.getenv("GATEHOUSE_BENCH_THREADS") or "")
local start = tonumber(os.getenv("GATEHOUSE_BENCH_KEYS_START") or "0")
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
  mine = {}
  local i = 0
  for line in io.lines(path) do
    if i % nthreads == id then
      mine[#mine + 1] = '{"key":"' .. line .. '"}'
    end
    i = i + 1
  end
  share = #mine
  first = math.floor(start / nthreads)
  sent = 0
end

function request()
  local body = mine[(first + sent) % share + 1]
  sent = sent + 1
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, body)
end

function done(summary, latency, requests)
  local least = nil
  for _, thread in ipairs(threads) do
    local s = thread:get("sent") or 0
    if least == nil or s < least then
      least = s
    end
  end
  io.write(string.format("keys covered: %d\n", (least or 0) * nthreads))
end
