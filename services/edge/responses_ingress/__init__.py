"""The OpenAI Responses API (`/v1/responses` and its stored-response routes) as an ingress
dialect: requests become the internal OpenAI chat body every model is served from (and,
for a route to OpenAI, the client's own body, passed through to OpenAI's Responses API),
answers and streams go back as Responses objects and events, errors keep OpenAI's shape."""
