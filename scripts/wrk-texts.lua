-- POST /v1/sentiment with one text per request, cycling through the lines of the file named by
-- the WRK_TEXTS environment variable (SST-2 format: `label text`).
local texts = {}
for line in io.lines(os.getenv("WRK_TEXTS")) do
  local text = line:match("^%S+%s+(.+)$")
  if text then
    texts[#texts + 1] = text:gsub('\\', '\\\\'):gsub('"', '\\"')
  end
end
local counter = 0

request = function()
  counter = counter + 1
  local body = '{"texts":["' .. texts[(counter % #texts) + 1] .. '"]}'
  return wrk.format("POST", "/v1/sentiment", { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY") }, body)
end
