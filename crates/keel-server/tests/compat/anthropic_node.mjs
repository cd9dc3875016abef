// The official `@anthropic-ai/sdk` Node SDK, used the way its README shows.

import Anthropic from '@anthropic-ai/sdk';
import { jsonSchemaOutputFormat } from '@anthropic-ai/sdk/helpers/json-schema';

import {
  MAX_TOKENS,
  PNG_BASE64,
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

/** `baseURL` is the server root: the SDK appends `/v1/messages`. */
export function anthropicApi(baseURL, model) {
  const t = tap();
  const client = new Anthropic({ baseURL, apiKey: 'client-key', maxRetries: 0, fetch: t.fetch });
  return { api: { client, model, tap: t }, tap: t };
}

const user = (content) => [{ role: 'user', content }];
const finish = (stop) => ({ end_turn: 'stop', max_tokens: 'length' })[stop] ?? stop;

function fromMessage(m) {
  const texts = m.content.filter((b) => b.type === 'text');
  expect(texts.length === 1, `${texts.length} text blocks: ${JSON.stringify(m.content).slice(0, 200)}`);
  return { text: texts[0].text, finish: finish(m.stop_reason) };
}

const TOOLS = [{ name: TOOL_NAME, description: 'Current weather in a city', input_schema: TOOL_JSON_SCHEMA }];

export const cases = {
  plain: async ({ client, model }) =>
    fromMessage(await client.messages.create({ model, max_tokens: MAX_TOKENS, messages: user('Hello there') })),

  // The SDK's stream helper: text events and the final message.
  stream: async ({ client, model }) => {
    const stream = client.messages.stream({ model, max_tokens: MAX_TOKENS, messages: user('Stream please') });
    let text = '';
    stream.on('text', (t) => {
      text += t;
    });
    const final = await stream.finalMessage();
    const whole = fromMessage(final);
    expect(whole.text === text, `text events ${JSON.stringify(text)} != final message ${JSON.stringify(whole.text)}`);
    return whole;
  },

  // The raw event loop most code has.
  'naive-loop': async ({ client, model }) => {
    const stream = await client.messages.create({
      model,
      max_tokens: MAX_TOKENS,
      messages: user('Stream it naively'),
      stream: true,
    });
    let text = '';
    for await (const event of stream) {
      if (event.type === 'content_block_delta') text += event.delta.text;
    }
    return { text };
  },

  'multi-turn': async ({ client, model }) =>
    fromMessage(
      await client.messages.create({
        model,
        max_tokens: MAX_TOKENS,
        system: 'You are a terse harbor master.',
        messages: [
          { role: 'user', content: 'When is high tide?' },
          { role: 'assistant', content: 'At noon.' },
          { role: 'user', content: 'And low tide?' },
        ],
      }),
    ),

  tools: async ({ client, model }) => {
    const messages = user(TOOL_PROMPT);
    const first = await client.messages.create({ model, max_tokens: MAX_TOKENS, tools: TOOLS, messages });
    expect(first.stop_reason === 'tool_use', `first stop reason ${first.stop_reason}, expected tool_use`);
    const uses = first.content.filter((b) => b.type === 'tool_use');
    expect(uses.length === 1, `${uses.length} tool_use blocks, expected 1`);
    const use = uses[0];
    const second = await client.messages.create({
      model,
      max_tokens: MAX_TOKENS,
      tools: TOOLS,
      messages: [
        ...messages,
        { role: 'assistant', content: first.content },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: TOOL_RESULT }] },
      ],
    });
    return { toolCall: { name: use.name, args: use.input }, ...fromMessage(second) };
  },

  // The first step streamed: the tool input arrives as partial JSON.
  'stream-tools': async ({ client, model }) => {
    const final = await client.messages
      .stream({ model, max_tokens: MAX_TOKENS, tools: TOOLS, messages: user(TOOL_PROMPT) })
      .finalMessage();
    expect(final.stop_reason === 'tool_use', `stop reason ${final.stop_reason}, expected tool_use`);
    const uses = final.content.filter((b) => b.type === 'tool_use');
    expect(uses.length === 1, `${uses.length} tool_use blocks, expected 1`);
    return { toolCall: { name: uses[0].name, args: uses[0].input } };
  },

  image: async ({ client, model }) =>
    fromMessage(
      await client.messages.create({
        model,
        max_tokens: MAX_TOKENS,
        messages: user([
          { type: 'text', text: 'What is in this image?' },
          { type: 'image', source: { type: 'base64', media_type: 'image/png', data: PNG_BASE64 } },
        ]),
      }),
    ),

  // Structured output the SDK's documented way: `output_config.format` and `messages.parse`.
  json: async ({ client, model }) => {
    const m = await client.messages.parse({
      model,
      max_tokens: MAX_TOKENS,
      messages: user('The weather in Paris, as JSON.'),
      output_config: { format: jsonSchemaOutputFormat(WEATHER_JSON_SCHEMA) },
    });
    const text = m.content.find((b) => b.type === 'text')?.text;
    expect(m.parsed_output != null, `no parsed_output; the answer was ${JSON.stringify(text)}`);
    return { json: parseJson(text, 'the answer'), finish: finish(m.stop_reason) };
  },

  // The client's own limit: the answer stops there (`max_tokens`), not continued.
  'max-tokens-5': async ({ client, model }) => {
    const m = await client.messages.create({ model, max_tokens: SMALL_MAX_TOKENS, messages: user('Cut me short') });
    const { text, finish: f } = fromMessage(m);
    return { cut: text, finish: f };
  },

  // Claude Sonnet 4.6's whole output limit, as the Vercel AI SDK sends by default.
  // Streamed: the SDK refuses a non-streaming call that may take over 10 minutes.
  'large-max-tokens': async ({ client, model }) =>
    fromMessage(
      await client.messages.stream({ model, max_tokens: 128000, messages: user('A long one') }).finalMessage(),
    ),
};

/** Probes of single behaviours. */
export const probes = {
  // `messages.countTokens` (POST /v1/messages/count_tokens): asked of the
  // route's Anthropic deployment; the SDK reads the count.
  'count-tokens': async ({ client, model }) => {
    const r = await client.messages.countTokens({ model, messages: user('Hello there, count me') });
    expect(Number.isInteger(r.input_tokens) && r.input_tokens > 0, `input_tokens ${JSON.stringify(r)}`);
    return { input_tokens: r.input_tokens };
  },

  // `messages.batches.list` (GET /v1/messages/batches): Keel does not serve it,
  // and must say so in an Anthropic-shaped JSON error naming what it serves.
  'unserved-path': async ({ client, tap: t }) => {
    let err;
    try {
      await client.messages.batches.list();
    } catch (e) {
      err = e;
    }
    expect(err, 'messages.batches.list succeeded?');
    const body = t.calls.at(-1)?.body ?? '';
    expect(err.status === 404, `status ${err.status}, expected 404`);
    let parsed;
    try {
      parsed = JSON.parse(body);
    } catch {
      parsed = undefined;
    }
    expect(
      parsed?.type === 'error' && parsed?.error?.message,
      `error body is not an Anthropic-shaped JSON error: ${JSON.stringify(body)}`,
    );
    expect(
      parsed.error.message.includes('/v1/messages'),
      `error message does not name what Keel serves: ${parsed.error.message}`,
    );
    return {};
  },
};
