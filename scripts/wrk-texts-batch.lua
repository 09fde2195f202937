-- POST /v1/sentiment with 32 texts per request, taken in turn from the lines of the file named
-- by the WRK_TEXTS environment variable (SST-2 format: `label text`).
local texts = {}
for line in io.lines(os.getenv("WRK_TEXTS")) do
  local text = line:match("^%S+%s+(.+)$")
  if text then
    texts[#texts + 1] = '"' .. text:gsub('\\', '\\\\'):gsub('"', '\\"') .. '"'
  end
end
local counter = 0

request = function()
  local batch = {}
  for i = 1, 32 do
    counter = counter + 1
    batch[i] = texts[(counter % #texts) + 1]
  end
  local body = '{"texts":[' .. table.concat(batch, ",") .. ']}'
  return wrk.format("POST", "/v1/sentiment", { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY") }, body)
end
