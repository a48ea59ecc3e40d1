"""The Anthropic Messages API (`POST /v1/messages`, `/v1/messages/count_tokens`) as an
ingress dialect: requests become the internal OpenAI chat body every model is served from,
answers and streams go back in Anthropic's shapes, errors in Anthropic's error shape."""
