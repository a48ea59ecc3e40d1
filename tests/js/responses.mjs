// Drives a running aig edge's /v1/responses with the official OpenAI JavaScript SDK's
// `responses.stream` helper. Usage: AIG_BASE_URL=... AIG_API_KEY=... node responses.mjs <model>...
import assert from "node:assert/strict";
import OpenAI from "openai";

const client = new OpenAI({
  baseURL: process.env.AIG_BASE_URL,
  apiKey: process.env.AIG_API_KEY,
  maxRetries: 0,
});

const weatherTool = {
  type: "function",
  name: "get_weather",
  description: "Current weather for a city",
  parameters: {
    type: "object",
    properties: { city: { type: "string" } },
    required: ["city"],
    additionalProperties: false,
  },
  strict: true,
};

async function streamed(model) {
  const stream = client.responses.stream({ model, input: "Stream to JavaScript" });
  let deltas = 0;
  let last = -1;
  for await (const event of stream) {
    assert.equal(event.sequence_number, last + 1);
    last = event.sequence_number;
    if (event.type === "response.output_text.delta") deltas += 1;
  }
  const final = await stream.finalResponse();
  assert.equal(final.status, "completed");
  assert.equal(final.model, model);
  assert.ok(final.usage.output_tokens > 0);
  return { text: final.output_text, deltas };
}

async function toolRoundTrip(model) {
  const stream = client.responses.stream({
    model,
    input: "What is the weather in Paris?",
    tools: [weatherTool],
    tool_choice: "required",
  });
  const asked = await stream.finalResponse();
  const call = asked.output.find((item) => item.type === "function_call");
  assert.equal(call.name, "get_weather");
  assert.equal(typeof JSON.parse(call.arguments).city, "string");
  const answer = await client.responses.create({
    model,
    previous_response_id: asked.id,
    input: [{ type: "function_call_output", call_id: call.call_id, output: "18C and sunny" }],
    tools: [weatherTool],
  });
  return answer.output_text;
}

const results = {};
for (const model of process.argv.slice(2)) {
  results[model] = { ...(await streamed(model)), tool_answer: await toolRoundTrip(model) };
}
console.log(JSON.stringify(results));
