// Drives a running aig edge with the Vercel AI SDK's default OpenAI provider, `openai(id)`,
// which speaks the Responses API. Usage: AIG_BASE_URL=... AIG_API_KEY=... node vercel_ai.mjs <model>...
import assert from "node:assert/strict";
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, stepCountIs, streamText, tool } from "ai";
import { z } from "zod";

const openai = createOpenAI({ baseURL: process.env.AIG_BASE_URL, apiKey: process.env.AIG_API_KEY });

const weather = tool({
  description: "Current weather for a city",
  inputSchema: z.object({ city: z.string() }),
  execute: async ({ city }) => `18C and sunny in ${city}`,
});

async function run(model) {
  const plain = await generateText({ model: openai(model), prompt: "Say hello to the AI SDK" });
  assert.equal(plain.finishReason, "stop");
  assert.ok(plain.usage.outputTokens > 0);

  const streamed = streamText({ model: openai(model), prompt: "Stream to the AI SDK" });
  let text = "";
  for await (const delta of streamed.textStream) text += delta;
  assert.equal(text, await streamed.text);
  assert.ok((await streamed.usage).outputTokens > 0);

  const withTool = await generateText({
    model: openai(model),
    prompt: "What is the weather in Paris?",
    tools: { get_weather: weather },
    stopWhen: stepCountIs(2),
  });
  assert.equal(withTool.steps[0].toolCalls[0].toolName, "get_weather");
  return { plain: plain.text, streamed: text, tool_answer: withTool.text };
}

const results = {};
for (const model of process.argv.slice(2)) results[model] = await run(model);
console.log(JSON.stringify(results));
