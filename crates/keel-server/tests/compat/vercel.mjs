// The Vercel AI SDK (`ai`) with its OpenAI (Chat Completions) and Anthropic providers.

import { createAnthropic } from '@ai-sdk/anthropic';
import { createOpenAI } from '@ai-sdk/openai';
import { generateObject, generateText, stepCountIs, streamText, tool } from 'ai';

import {
  MAX_TOKENS,
  PNG_DATA_URL,
  SMALL_MAX_TOKENS,
  TOOL_NAME,
  TOOL_PROMPT,
  TOOL_RESULT,
  ToolArgs,
  Weather,
  expect,
  tap,
} from './lib.mjs';

/** `baseURL` ends in `/v1` for both providers. */
export function vercelOpenaiApi(baseURL, model) {
  const t = tap();
  const provider = createOpenAI({ baseURL, apiKey: 'client-key', fetch: t.fetch });
  // `.chat`: Chat Completions; the provider's default is the Responses API (see the probes).
  return { api: { model: provider.chat(model), responsesModel: provider(model), tap: t }, tap: t };
}

export function vercelAnthropicApi(baseURL, model) {
  const t = tap();
  const provider = createAnthropic({ baseURL, apiKey: 'client-key', fetch: t.fetch });
  return { api: { model: provider(model), tap: t }, tap: t };
}

const common = { maxRetries: 0, maxOutputTokens: MAX_TOKENS };

/** streamText reports errors to `onError` and ends the stream; make them throw. */
async function streamed(args, read) {
  let error;
  const result = streamText({ ...common, ...args, onError: ({ error: e }) => (error ??= e) });
  const text = await read(result);
  if (error) throw error;
  return { text, finish: await result.finishReason };
}

export const cases = {
  plain: async ({ model }) => {
    const r = await generateText({ ...common, model, prompt: 'Hello there' });
    return { text: r.text, finish: r.finishReason };
  },

  stream: async ({ model }) =>
    streamed({ model, prompt: 'Stream please' }, async (result) => {
      let text = '';
      for await (const part of result.fullStream) {
        if (part.type === 'text-delta') text += part.text;
        if (part.type === 'error') throw part.error;
      }
      return text;
    }),

  'naive-loop': async ({ model }) => {
    const { text } = await streamed({ model, prompt: 'Stream it naively' }, async (result) => {
      let t = '';
      for await (const piece of result.textStream) t += piece;
      return t;
    });
    return { text };
  },

  'multi-turn': async ({ model }) => {
    const r = await generateText({
      ...common,
      model,
      system: 'You are a terse harbor master.',
      messages: [
        { role: 'user', content: 'When is high tide?' },
        { role: 'assistant', content: 'At noon.' },
        { role: 'user', content: 'And low tide?' },
      ],
    });
    return { text: r.text, finish: r.finishReason };
  },

  // Two steps: the model calls the tool, the SDK runs it and sends the result back.
  tools: async ({ model }) => {
    const r = await generateText({
      ...common,
      model,
      prompt: TOOL_PROMPT,
      tools: {
        [TOOL_NAME]: tool({
          description: 'Current weather in a city',
          inputSchema: ToolArgs,
          execute: async () => JSON.parse(TOOL_RESULT),
        }),
      },
      stopWhen: stepCountIs(3),
    });
    expect(r.steps.length === 2, `${r.steps.length} steps, expected 2 (tool call, answer)`);
    const calls = r.steps[0].toolCalls;
    expect(calls.length === 1, `${calls.length} tool calls in step 1, expected 1`);
    return { toolCall: { name: calls[0].toolName, args: calls[0].input }, text: r.text, finish: r.finishReason };
  },

  // The same round trip, streamed.
  'stream-tools': async ({ model }) => {
    let error;
    const result = streamText({
      ...common,
      model,
      prompt: TOOL_PROMPT,
      tools: {
        [TOOL_NAME]: tool({
          description: 'Current weather in a city',
          inputSchema: ToolArgs,
          execute: async () => JSON.parse(TOOL_RESULT),
        }),
      },
      stopWhen: stepCountIs(3),
      onError: ({ error: e }) => (error ??= e),
    });
    const text = await result.text;
    if (error) throw error;
    const steps = await result.steps;
    expect(steps.length === 2, `${steps.length} steps, expected 2 (tool call, answer)`);
    const calls = steps[0].toolCalls;
    expect(calls.length === 1, `${calls.length} tool calls in step 1, expected 1`);
    return { toolCall: { name: calls[0].toolName, args: calls[0].input }, text, finish: await result.finishReason };
  },

  image: async ({ model }) => {
    const r = await generateText({
      ...common,
      model,
      messages: [
        {
          role: 'user',
          content: [
            { type: 'text', text: 'What is in this image?' },
            { type: 'image', image: PNG_DATA_URL },
          ],
        },
      ],
    });
    return { text: r.text, finish: r.finishReason };
  },

  json: async ({ model }) => {
    const r = await generateObject({ ...common, model, schema: Weather, prompt: 'The weather in Paris, as JSON.' });
    return { json: r.object, finish: r.finishReason };
  },

  // The client's own limit: the answer stops there, not continued.
  'max-tokens-5': async ({ model }) => {
    const r = await generateText({ maxRetries: 0, model, prompt: 'Cut me short', maxOutputTokens: SMALL_MAX_TOKENS });
    return { cut: r.text, finish: r.finishReason };
  },

  // No maxOutputTokens: the provider's default for the model (128000 for claude-sonnet-4-6).
  'large-max-tokens': async ({ model }) => {
    const r = await generateText({ maxRetries: 0, model, prompt: 'A long one' });
    return { text: r.text, finish: r.finishReason };
  },
};

export const probes = {
  // `openai(model)` with no `.chat`: the provider's default, the Responses API.
  'responses-api': async ({ responsesModel }) => {
    const r = await generateText({ maxRetries: 0, model: responsesModel, prompt: 'Hello' });
    expect(r.text.length > 0, `no text: ${JSON.stringify(r.response?.body ?? '')}`);
    return { text: r.text, finish: r.finishReason };
  },
};
