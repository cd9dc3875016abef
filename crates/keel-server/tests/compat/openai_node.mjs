// The official `openai` Node SDK, used the way its README shows.

import OpenAI from 'openai';

import {
  MAX_TOKENS,
  PNG_DATA_URL,
  SMALL_MAX_TOKENS,
  TOOL_JSON_SCHEMA,
  TOOL_NAME,
  TOOL_PROMPT,
  TOOL_RESULT,
  WEATHER_JSON_SCHEMA,
  expect,
  parseJson,
  tap,
} from './lib.mjs';

export function openaiApi(baseURL, model) {
  const t = tap();
  const client = new OpenAI({ baseURL, apiKey: 'client-key', maxRetries: 0, fetch: t.fetch });
  return { api: { client, model, tap: t }, tap: t };
}

const user = (content) => [{ role: 'user', content }];

function fromCompletion(c) {
  expect(c.choices.length === 1, `${c.choices.length} choices`);
  const choice = c.choices[0];
  return { text: choice.message.content, finish: choice.finish_reason };
}

/** A careful loop: `choices[0]?.` and the finish reason. */
async function collectStream(stream) {
  let text = '';
  let finish;
  for await (const chunk of stream) {
    const choice = chunk.choices[0];
    if (choice?.delta?.content) text += choice.delta.content;
    if (choice?.finish_reason) finish = choice.finish_reason;
  }
  return { text, finish };
}

const TOOLS = [
  {
    type: 'function',
    function: { name: TOOL_NAME, description: 'Current weather in a city', parameters: TOOL_JSON_SCHEMA },
  },
];

export const cases = {
  plain: async ({ client, model }) =>
    fromCompletion(
      await client.chat.completions.create({ model, messages: user('Hello there'), max_tokens: MAX_TOKENS }),
    ),

  stream: async ({ client, model }) =>
    collectStream(
      await client.chat.completions.create({
        model,
        messages: user('Stream please'),
        max_tokens: MAX_TOKENS,
        stream: true,
      }),
    ),

  // The loop most code has; it throws a TypeError on a chunk without choices.
  'naive-loop': async ({ client, model }) => {
    const stream = await client.chat.completions.create({
      model,
      messages: user('Stream it naively'),
      max_tokens: MAX_TOKENS,
      stream: true,
    });
    let text = '';
    for await (const chunk of stream) {
      text += chunk.choices[0].delta.content ?? '';
    }
    return { text };
  },

  'multi-turn': async ({ client, model }) =>
    fromCompletion(
      await client.chat.completions.create({
        model,
        max_tokens: MAX_TOKENS,
        messages: [
          { role: 'system', content: 'You are a terse harbor master.' },
          { role: 'user', content: 'When is high tide?' },
          { role: 'assistant', content: 'At noon.' },
          { role: 'user', content: 'And low tide?' },
        ],
      }),
    ),

  // A full round trip: the model calls the tool, the result goes back, the model answers.
  tools: async ({ client, model }) => {
    const messages = user(TOOL_PROMPT);
    const first = await client.chat.completions.create({ model, messages, tools: TOOLS, max_tokens: MAX_TOKENS });
    const choice = first.choices[0];
    expect(choice.finish_reason === 'tool_calls', `first finish reason ${choice.finish_reason}, expected tool_calls`);
    const calls = choice.message.tool_calls ?? [];
    expect(calls.length === 1, `${calls.length} tool calls, expected 1`);
    const call = calls[0];
    expect(typeof call.id === 'string' && call.id.length > 0, 'tool call without an id');
    const second = await client.chat.completions.create({
      model,
      tools: TOOLS,
      max_tokens: MAX_TOKENS,
      messages: [
        ...messages,
        { role: 'assistant', content: null, tool_calls: [call] },
        { role: 'tool', tool_call_id: call.id, content: TOOL_RESULT },
      ],
    });
    const answer = fromCompletion(second);
    return {
      toolCall: { name: call.function.name, args: parseJson(call.function.arguments, 'tool arguments') },
      ...answer,
    };
  },

  // The first step streamed: the tool call arrives in pieces.
  'stream-tools': async ({ client, model }) => {
    const stream = await client.chat.completions.create({
      model,
      messages: user(TOOL_PROMPT),
      tools: TOOLS,
      max_tokens: MAX_TOKENS,
      stream: true,
    });
    const call = { id: '', name: '', args: '' };
    let finish;
    for await (const chunk of stream) {
      const choice = chunk.choices[0];
      for (const tc of choice?.delta?.tool_calls ?? []) {
        expect(tc.index === 0, `tool call index ${tc.index}`);
        call.id += tc.id ?? '';
        call.name += tc.function?.name ?? '';
        call.args += tc.function?.arguments ?? '';
      }
      if (choice?.finish_reason) finish = choice.finish_reason;
    }
    expect(finish === 'tool_calls', `finish reason ${finish}, expected tool_calls`);
    expect(call.id.length > 0, 'streamed tool call without an id');
    return { toolCall: { name: call.name, args: parseJson(call.args, 'streamed tool arguments') } };
  },

  image: async ({ client, model }) =>
    fromCompletion(
      await client.chat.completions.create({
        model,
        max_tokens: MAX_TOKENS,
        messages: user([
          { type: 'text', text: 'What is in this image?' },
          { type: 'image_url', image_url: { url: PNG_DATA_URL } },
        ]),
      }),
    ),

  json: async ({ client, model }) => {
    const c = await client.chat.completions.create({
      model,
      max_tokens: MAX_TOKENS,
      messages: user('The weather in Paris, as JSON.'),
      response_format: {
        type: 'json_schema',
        json_schema: { name: 'weather', strict: true, schema: WEATHER_JSON_SCHEMA },
      },
    });
    return { json: parseJson(c.choices[0].message.content, 'the answer'), finish: c.choices[0].finish_reason };
  },

  // The client's own limit: the answer stops there (finish `length`), not continued.
  'max-tokens-5': async ({ client, model }) => {
    const c = await client.chat.completions.create({ model, messages: user('Cut me short'), max_tokens: SMALL_MAX_TOKENS });
    const { text, finish } = fromCompletion(c);
    return { cut: text, finish };
  },

  // gpt-4o-mini's whole output limit.
  'large-max-tokens': async ({ client, model }) =>
    fromCompletion(
      await client.chat.completions.create({ model, messages: user('A long one'), max_tokens: 16384 }),
    ),
};

/** Probes of single behaviours, on their own routes. */
export const probes = {
  // A chain whose first deployment (Anthropic) cannot give two choices: skip to OpenAI.
  // (`keel chaos` answers one choice whatever `n`, so the count is not checked.)
  'n=2': async ({ client, model, tap: t }) => {
    const c = await client.chat.completions.create({
      model,
      n: 2,
      max_tokens: MAX_TOKENS,
      messages: user('Two answers please'),
    });
    const served = t.calls.at(-1)?.deployment;
    expect(served === 'oa', `served by ${served}, expected the chain's OpenAI deployment (oa)`);
    return { choices: c.choices.map((ch) => ch.message.content) };
  },

  // OpenAI takes both; current Claude models refuse `temperature` with `top_p`,
  // so the translation must send one (the route's upstream refuses both, see compat.rs).
  'temperature+top_p': async ({ client, model }) =>
    fromCompletion(
      await client.chat.completions.create({
        model,
        messages: user('Sampled answer please'),
        max_tokens: MAX_TOKENS,
        temperature: 0.7,
        top_p: 0.9,
      }),
    ),

  // Keel's own final error tells the SDK whether retrying can help: `true` after
  // transient failures (the `dead` route's 500s), `false` when every deployment
  // refused the request as invalid (the `refuses` route's 400s).
  'x-should-retry': async ({ client, model, tap: t }) => {
    let status;
    try {
      await client.chat.completions.create({ model, messages: user('x'), max_tokens: 10 });
    } catch (e) {
      status = e.status;
    }
    expect(status >= 400, `status ${status}, expected an error`);
    const want = status >= 500 || status === 429 ? 'true' : 'false';
    const h = t.calls.at(-1)?.shouldRetry;
    expect(h === want, `HTTP ${status} with x-should-retry: ${h ?? '(absent)'}, expected ${want}`);
    return {};
  },

  // The Responses API (the default in current SDK READMEs), over the same chain.
  'responses-api': async ({ client, model }) => {
    const r = await client.responses.create({ model, input: 'Hello' });
    expect(r.object === 'response', `object ${r.object}, expected response`);
    expect(r.status === 'completed', `status ${r.status}, expected completed`);
    expect(r.output_text?.length > 0, `no output_text: ${JSON.stringify(r.output)}`);
    return { text: r.output_text };
  },
};
