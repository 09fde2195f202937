-- POST /v1/sentiment with one text per request.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"texts":["The onboarding was smooth and the support team was wonderful."]}'
