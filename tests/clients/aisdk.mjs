// The AI SDK as an application uses it, pointed at the gateway (tests/test_real_clients.py runs this).
// usage: node aisdk.mjs <messages|chat> <streamText|streamObject> <baseURL> <apiKey> <model>
//   messages: @ai-sdk/anthropic (POST /v1/messages); chat: @ai-sdk/openai's .chat() (POST /v1/chat/completions)
// Prints one JSON line: what the application received (text, tool calls and results, or the object).
import { createAnthropic } from "@ai-sdk/anthropic";
import { createOpenAI } from "@ai-sdk/openai";
import { stepCountIs, streamObject, streamText, tool } from "ai";
import { z } from "zod";

const [route, scenario, baseURL, apiKey, modelId] = process.argv.slice(2);
const model = route === "messages"
    ? createAnthropic({ baseURL, apiKey })(modelId)
    : createOpenAI({ baseURL, apiKey }).chat(modelId);
globalThis.AI_SDK_LOG_WARNINGS = false;

// The stream's own error events are the failures a user sees; surface them instead of an empty result.
const errors = [];
const onError = ({ error }) => errors.push(String(error?.message ?? error));

if (scenario === "streamText") {
    const calls = [];
    const result = streamText({
        model,
        prompt: "What is the weather in Paris?",
        tools: {
            weather: tool({
                description: "Current weather in a city",
                inputSchema: z.object({ city: z.string() }),
                execute: async ({ city }) => {
                    calls.push(city);
                    return { city, celsius: 21 };
                },
            }),
        },
        stopWhen: stepCountIs(3),
        onError,
    });
    let out = { text: null, executed: calls, toolCalls: [], steps: 0, finishReason: null };
    try {
        const steps = await result.steps;
        out = {
            text: await result.text,
            executed: calls,
            toolCalls: steps.flatMap((s) => s.toolCalls.map((c) => ({ name: c.toolName, input: c.input }))),
            steps: steps.length,
            finishReason: await result.finishReason,
        };
    } catch (error) {
        errors.push(String(error?.message ?? error));
    }
    console.log(JSON.stringify({ ...out, errors }));
} else {
    const result = streamObject({
        model,
        prompt: "A recipe for pancakes.",
        schema: z.object({ name: z.string(), ingredients: z.array(z.string()), minutes: z.number() }),
        onError,
    });
    let object = null;
    try {
        // The object settles once its stream has been read, as an application reading partials does.
        for await (const partial of result.partialObjectStream) void partial;
        object = await result.object;
    } catch (error) {
        errors.push(String(error?.message ?? error));
    }
    console.log(JSON.stringify({ object, errors }));
}
