-- POST /v1/sentiment with 32 texts per request.
local texts = {}
for i = 1, 32 do
  texts[i] = string.format('"Review %d: the onboarding was smooth and the support team was wonderful."', i)
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"texts":[' .. table.concat(texts, ",") .. ']}'
