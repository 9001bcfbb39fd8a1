-- wrk script for scripts/bench.sh: POST /api/v1/keys/verify with a fixed key.
-- The key comes from the environment so it never lands on a command line.
local key = os.getenv("GATEHOUSE_BENCH_KEY")
if key == nil or key == "" then
  error("GATEHOUSE_BENCH_KEY is not set")
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"key":"' .. key .. '"}'
