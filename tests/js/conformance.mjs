// Drives a running aig edge with the official OpenAI JavaScript SDK and checks what the SDK
// parsed. Usage: AIG_BASE_URL=... AIG_API_KEY=... node conformance.mjs <model>
import assert from "node:assert/strict";
import OpenAI from "openai";

const model = process.argv[2];
const client = new OpenAI({
  baseURL: process.env.AIG_BASE_URL,
  apiKey: process.env.AIG_API_KEY,
  maxRetries: 0,
});

const weatherTool = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Current weather for a city",
    parameters: {
      type: "object",
      properties: { city: { type: "string" } },
      required: ["city"],
    },
  },
};

async function plain() {
  const completion = await client.chat.completions.create({
    model,
    messages: [{ role: "user", content: "Say hello to the JavaScript SDK" }],
  });
  assert.equal(completion.object, "chat.completion");
  assert.equal(completion.model, model);
  assert.equal(completion.choices[0].finish_reason, "stop");
  assert.ok(completion.choices[0].message.content.length > 0);
  assert.ok(completion.usage.total_tokens > 0);
  return completion.choices[0].message.content;
}

async function streamed() {
  const stream = await client.chat.completions.create({
    model,
    messages: [{ role: "user", content: "Stream a greeting to the JavaScript SDK" }],
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = "";
  let finish = null;
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      text += choice.delta.content ?? "";
      finish = choice.finish_reason ?? finish;
    }
  }
  assert.ok(text.length > 0);
  assert.equal(finish, "stop");
  assert.ok(usage && usage.completion_tokens > 0);
  // The SDK's own stream helper validates role, finish_reason and tool-call fields strictly.
  const runner = client.chat.completions.stream({
    model,
    messages: [{ role: "user", content: "Stream again" }],
  });
  const final = await runner.finalChatCompletion();
  assert.ok(final.choices[0].message.content.length > 0);
  return text;
}

async function tools() {
  const completion = await client.chat.completions.create({
    model,
    messages: [{ role: "user", content: "What is the weather in Paris?" }],
    tools: [weatherTool],
    tool_choice: "required",
  });
  const call = completion.choices[0].message.tool_calls[0];
  assert.equal(completion.choices[0].finish_reason, "tool_calls");
  assert.equal(call.function.name, "get_weather");
  assert.equal(typeof JSON.parse(call.function.arguments).city, "string");

  const runner = client.chat.completions.stream({
    model,
    messages: [{ role: "user", content: "What is the weather in Paris?" }],
    tools: [weatherTool],
    tool_choice: "required",
  });
  const final = await runner.finalChatCompletion();
  const streamedCall = final.choices[0].message.tool_calls[0];
  assert.equal(streamedCall.function.name, "get_weather");
  assert.deepEqual(JSON.parse(streamedCall.function.arguments), JSON.parse(call.function.arguments));

  const answer = await client.chat.completions.create({
    model,
    messages: [
      { role: "user", content: "What is the weather in Paris?" },
      { role: "assistant", content: null, tool_calls: [call] },
      { role: "tool", tool_call_id: call.id, content: "18C and sunny" },
    ],
    tools: [weatherTool],
  });
  assert.equal(answer.choices[0].finish_reason, "stop");
  return answer.choices[0].message.content;
}

const results = { model, plain: await plain(), streamed: await streamed(), tools: await tools() };
console.log(JSON.stringify(results));
