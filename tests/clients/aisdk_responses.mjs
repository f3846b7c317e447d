// AI SDK 6 with its default OpenAI provider (`openai(model)` = the Responses API), pointed at the gateway.
// node aisdk.mjs generate|stream   env: GATEWAY_BASE (http://127.0.0.1:PORT/v1), GATEWAY_KEY, MODEL
// Prints one JSON line: the final text, the number of steps and the finish reason.
import { generateText, streamText, tool, stepCountIs } from 'ai';
import { createOpenAI } from '@ai-sdk/openai';
import { z } from 'zod';

const mode = process.argv[2];
const model = createOpenAI({ baseURL: process.env.GATEWAY_BASE, apiKey: process.env.GATEWAY_KEY })(process.env.MODEL);
const tools = {
  get_weather: tool({
    description: 'Get the weather for a city',
    inputSchema: z.object({ city: z.string().describe('City name') }),
    execute: async ({ city }) => `Sunny in ${city}, 21 C`,
  }),
};
const request = { model, tools, stopWhen: stepCountIs(3), prompt: 'What is the weather in Paris? Use the tool.' };

if (mode === 'generate') {
  const r = await generateText(request);
  console.log(JSON.stringify({ text: r.text, steps: r.steps.length, finishReason: r.finishReason }));
} else if (mode === 'stream') {
  const r = streamText(request);
  let text = '';
  const errors = [];
  for await (const part of r.fullStream) {
    if (part.type === 'text-delta') text += part.text;
    if (part.type === 'error') errors.push(String(part.error?.message || part.error));
  }
  console.log(JSON.stringify({ text, steps: (await r.steps).length, finishReason: await r.finishReason, errors }));
} else {
  throw new Error(`mode must be generate or stream, not ${mode}`);
}
