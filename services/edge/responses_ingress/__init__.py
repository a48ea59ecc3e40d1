"""The OpenAI Responses API (`/v1/responses` and its stored-response routes) as an ingress
dialect: requests become the internal OpenAI chat body every model is served from, answers
and streams go back as Responses objects and events, errors keep OpenAI's shape."""
